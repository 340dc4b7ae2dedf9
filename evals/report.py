"""Reports of an evaluation run: a self-contained HTML page comparing the variants, a JSON file with
every score, and the run logged to MLflow (experiment `triage-evals`)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.gate import GateOutcome, Thresholds
from evals.metrics import DESCRIPTIONS, SUMMARY_SEMANTIC, VERDICT_EXACT_MATCH
from evals.runner import CaseResult, EvalResult, VariantResult

EXPERIMENT = "triage-evals"
WORST_CASES = 8


@dataclass(frozen=True)
class ReportPaths:
    directory: Path
    html: Path
    json: Path


def report_dict(result: EvalResult, outcome: GateOutcome) -> dict[str, Any]:
    return {**result.as_dict(), "gate": outcome.as_dict()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def metric_bars(result: EvalResult, thresholds: Thresholds) -> str:
    """Grouped bars: one group per metric, one bar per variant, the minimum as a tick."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the chart goes into the page
    import matplotlib.pyplot as plt

    metrics = [m for m in result.metrics]
    width = 0.8 / max(len(result.variants), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics)), 3.6))
    for i, v in enumerate(result.variants):
        xs = [j + i * width for j in range(len(metrics))]
        ys = [v.metrics.get(m) or 0.0 for m in metrics]
        bars = ax.bar(xs, ys, width=width, label=v.variant)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
    for j, m in enumerate(metrics):
        limit = thresholds.metrics.get(m)
        if limit and limit.min is not None:
            ax.hlines(
                limit.min,
                j - width / 2,
                j + width * (len(result.variants) - 0.5),
                colors="black",
                linestyles="dashed",
                linewidth=1,
            )
    ax.set_xticks([j + width * (len(result.variants) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m.replace("_", "\n", 1) for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mean score")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Mean score per metric (dashed: gate minimum)", fontsize=10)
    uri = _png(fig)
    plt.close(fig)
    return uri


def _heat(value: float | None) -> str:
    if value is None:
        return "background:#eee"
    # red (0) -> yellow (0.5) -> green (1)
    red = int(255 * min(1.0, 2 * (1 - value)))
    green = int(255 * min(1.0, 2 * value))
    return f"background:rgb({red},{green},90)"


def rule_table(result: EvalResult) -> str:
    shown = (VERDICT_EXACT_MATCH, SUMMARY_SEMANTIC)
    head = "".join(
        f"<th>{html.escape(v.variant)}<br><small>{html.escape(m)}</small></th>"
        for v in result.variants
        for m in shown
    )
    rules = sorted({r for v in result.variants for r in v.per_rule})
    rows = []
    for rule in rules:
        cells = "".join(
            f'<td style="{_heat(v.per_rule.get(rule, {}).get(m))}">'
            f"{_fmt(v.per_rule.get(rule, {}).get(m))}</td>"
            for v in result.variants
            for m in shown
        )
        rows.append(f"<tr><th>{html.escape(rule)}</th>{cells}</tr>")
    return f'<table class="heat"><tr><th>rule</th>{head}</tr>{"".join(rows)}</table>'


def confusion_table(v: VariantResult) -> str:
    answered = list(next(iter(v.confusion.values())).keys()) if v.confusion else []
    head = "".join(f"<th>{html.escape(a)}</th>" for a in answered)
    rows = []
    for ref, counts in v.confusion.items():
        total = max(sum(counts.values()), 1)
        cells = "".join(
            f'<td style="background:rgba({"40,160,60" if a == ref else "200,60,40"},'
            f'{counts[a] / total:.2f})">{counts[a]}</td>'
            for a in answered
        )
        rows.append(f"<tr><th>{html.escape(ref)}</th>{cells}</tr>")
    return (
        f'<table class="confusion"><tr><th>reference \\ answer</th>{head}</tr>'
        f"{''.join(rows)}</table>"
    )


def worst_cases(v: VariantResult, n: int = WORST_CASES) -> list[CaseResult]:
    def badness(c: CaseResult) -> tuple[float, float]:
        return (
            c.scores.get(VERDICT_EXACT_MATCH) or 0.0,
            c.scores.get(SUMMARY_SEMANTIC) or 0.0,
        )

    return sorted(v.cases, key=badness)[:n]


def _case_block(c: CaseResult) -> str:
    scores = ", ".join(f"{k} {_fmt(x)}" for k, x in c.scores.items())
    answer = (
        html.escape(c.summary or "")
        if c.error is None
        else f'<span class="error">{html.escape(c.error_kind or "")} error: '
        f"{html.escape(c.error)}</span>"
    )
    actions = ""
    if c.answer and c.answer.get("recommended_actions"):
        actions = (
            "<br><small>actions: "
            + html.escape("; ".join(c.answer["recommended_actions"]))
            + "</small>"
        )
    return (
        f"<tr><td><b>{html.escape(c.case_id)}</b><br><small>{html.escape(c.rule_id)}</small></td>"
        f"<td>{html.escape(c.reference_verdict)}</td><td>{html.escape(c.verdict or 'failed')}</td>"
        f"<td>{answer}{actions}</td><td>{html.escape(c.reference_summary)}</td>"
        f"<td><small>{html.escape(scores)}</small></td></tr>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top;text-align:left}
table.heat td,table.confusion td{text-align:center;min-width:4em}
.pass{color:#187a2f;font-weight:bold}.fail{color:#b3261e;font-weight:bold}
.error{color:#b3261e}small{color:#555}
.variants{display:flex;gap:2em;flex-wrap:wrap}
"""


def render_html(result: EvalResult, outcome: GateOutcome, thresholds: Thresholds) -> str:
    ds = result.dataset
    summary_head = "".join(f"<th>{html.escape(v.variant)}</th>" for v in result.variants)
    rows = []
    for m in result.metrics:
        limit = thresholds.metrics.get(m)
        minimum = _fmt(limit.min) if limit else "-"
        cells = "".join(f"<td>{_fmt(v.metrics.get(m))}</td>" for v in result.variants)
        rows.append(
            f'<tr><th title="{html.escape(DESCRIPTIONS.get(m, ""))}">{html.escape(m)}</th>'
            f"<td>{minimum}</td>{cells}</tr>"
        )
    for label, attr in (
        ("answered", "answered"),
        ("parse failures", "parse_failures"),
        ("gateway errors", "gateway_errors"),
        ("judge errors", "judge_errors"),
    ):
        cells = "".join(f"<td>{getattr(v, attr)}</td>" for v in result.variants)
        rows.append(f"<tr><th>{label}</th><td></td>{cells}</tr>")
    gate_cells = "".join(
        f'<td class="{"pass" if outcome.variants[v.variant].ok else "fail"}">'
        f"{'control: ' if outcome.variants[v.variant].control else ''}"
        f"{'passed' if outcome.variants[v.variant].passed else 'failed'}</td>"
        for v in result.variants
    )
    rows.append(f"<tr><th>gate</th><td></td>{gate_cells}</tr>")
    skipped = (
        f"<p>Skipped (no judge model, SENTINEL_EVALS_JUDGE_MODEL unset): "
        f"{html.escape(', '.join(result.skipped_metrics))}</p>"
        if result.skipped_metrics
        else f"<p>Judge model: {html.escape(result.judge_model or '')}</p>"
    )
    gate_list = "".join(f"<li>{html.escape(v.summary())}</li>" for v in outcome.variants.values())
    confusions = "".join(
        f"<div><h3>{html.escape(v.variant)}</h3>{confusion_table(v)}</div>" for v in result.variants
    )
    worst = "".join(
        f"<h3>{html.escape(v.variant)}</h3><table><tr><th>case</th><th>reference</th>"
        f"<th>answer</th><th>answer summary</th><th>reference summary</th><th>scores</th></tr>"
        f"{''.join(_case_block(c) for c in worst_cases(v))}</table>"
        for v in result.variants
    )
    prompts = "".join(
        f"<li>{html.escape(v.variant)}: prompt {html.escape(v.prompt['id'])} "
        f"{html.escape(v.prompt['version'])} (sha256 {html.escape(v.prompt['sha256'][:12])})</li>"
        for v in result.variants
    )
    verdict = "passed" if outcome.passed else "FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Triage evaluation {html.escape(result.run_id)}</title><style>{_CSS}</style></head><body>
<h1>Triage evaluation {html.escape(result.run_id)}:
<span class="{"pass" if outcome.passed else "fail"}">gate {verdict}</span></h1>
<p>Dataset <b>{html.escape(ds["name"])}</b> version {html.escape(ds["version"])}
({ds["cases"]} cases, sha256 {html.escape(ds["sha256"][:12])}),
{html.escape(result.started_at)} to {html.escape(result.finished_at)};
gateway {html.escape(result.gateway["base_url"])}
{"(embedded)" if result.gateway["embedded"] else ""}.</p>
<ul>{prompts}</ul>{skipped}
<h2>Scores</h2>
<table><tr><th>metric</th><th>gate min</th>{summary_head}</tr>{"".join(rows)}</table>
<ul>{gate_list}</ul>
<img alt="mean score per metric" src="{metric_bars(result, thresholds)}">
<h2>Per rule</h2>{rule_table(result)}
<h2>Verdicts</h2><div class="variants">{confusions}</div>
<h2>Worst cases</h2>{worst}
</body></html>
"""


def write_reports(
    result: EvalResult, outcome: GateOutcome, thresholds: Thresholds, out_dir: Path
) -> ReportPaths:
    """report.html and report.json under `out_dir` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out_dir, out_dir / "report.html", out_dir / "report.json")
    paths.json.write_text(json.dumps(report_dict(result, outcome), indent=2))
    paths.html.write_text(render_html(result, outcome, thresholds))
    return paths


def _metric_prefix(variant: str) -> str:
    return variant.replace(":", "/")  # MLflow metric names cannot hold ':'; '/' groups them


def log_to_mlflow(
    result: EvalResult,
    outcome: GateOutcome,
    paths: ReportPaths,
    *,
    tracking_uri: str,
    artifact_root: str,
) -> str:
    """One parent run for the evaluation (dataset, gate, the reports) with a nested run per
    variant (model, prompt and its scores); returns the parent run's id."""
    import mlflow

    from sentinel.ml import registry

    client = registry.configure(tracking_uri)
    experiment_id = registry.experiment(client, artifact_root, EXPERIMENT)
    dataset = {
        "dataset": result.dataset["name"],
        "dataset_version": result.dataset["version"],
        "dataset_sha256": result.dataset["sha256"],
        "dataset_cases": result.dataset["cases"],
        "judge_model": result.judge_model or "-",
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=result.run_id) as parent:
        mlflow.log_params({**dataset, "variants": ",".join(v.variant for v in result.variants)})
        mlflow.set_tags(
            {"evals_run_id": result.run_id, "gate": "passed" if outcome.passed else "failed"}
        )
        mlflow.log_metric("gate_passed", float(outcome.passed))
        for v in result.variants:
            verdict = outcome.variants[v.variant]
            with mlflow.start_run(experiment_id=experiment_id, run_name=v.variant, nested=True):
                mlflow.log_params(
                    {
                        **dataset,
                        "model": v.model,
                        "prompt_id": v.prompt["id"],
                        "prompt_version": v.prompt["version"],
                        "prompt_sha256": v.prompt["sha256"],
                        "control": verdict.control,
                    }
                )
                mlflow.set_tags({"evals_run_id": result.run_id, "variant": v.variant})
                mlflow.log_metrics(
                    {
                        **{k: x for k, x in v.metrics.items() if x is not None},
                        "parse_failures": v.parse_failures,
                        "gateway_errors": v.gateway_errors,
                        "judge_errors": v.judge_errors,
                        "gate_passed": float(verdict.passed),
                    }
                )
            # Per-variant scores on the parent too, so runs compare side by side in one row.
            mlflow.log_metrics(
                {
                    f"{_metric_prefix(v.variant)}/{k}": x
                    for k, x in v.metrics.items()
                    if x is not None
                }
            )
        mlflow.log_artifact(str(paths.html))
        mlflow.log_artifact(str(paths.json))
        return str(parent.info.run_id)
