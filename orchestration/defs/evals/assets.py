"""The nightly triage evaluation as an asset: `triage_eval_report` runs every variant on the golden
dataset through the gateway, writes the reports, logs to MLflow, and carries the gate's verdict
as its blocking check `triage_eval_gate_check`."""

from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.defs.evals.checks import gate_check_result, gate_check_spec
from sentinel.settings import Settings

ASSET = "triage_eval_report"


class EvalConfig(dg.Config):
    """Launchpad knobs of one evaluation; empty means the settings' and the repository's defaults."""

    models: str | None = None  # model:prompt,... (default: SENTINEL_EVALS_MODELS)
    dataset: str | None = None  # JSONL path (default: evals/datasets/triage-golden-v1.jsonl)
    thresholds: str | None = None  # YAML path (default: evals/thresholds.yaml)
    cases: list[str] | None = None  # only these case ids


def _summary_markdown(evaluation: Any) -> str:
    result, outcome = evaluation.result, evaluation.outcome
    lines = [
        "| metric | " + " | ".join(v.variant for v in result.variants) + " |",
        "| --- |" + " --- |" * len(result.variants),
    ]
    for metric in result.metrics:
        cells = [
            "-" if v.metrics.get(metric) is None else f"{v.metrics[metric]:.3f}"
            for v in result.variants
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append(
        "| gate | "
        + " | ".join(
            ("control: " if outcome.variants[v.variant].control else "")
            + ("passed" if outcome.variants[v.variant].passed else "failed")
            for v in result.variants
        )
        + " |"
    )
    if result.skipped_metrics:
        lines.append(f"\nSkipped (no judge model): {', '.join(result.skipped_metrics)}")
    lines.append("\n" + "\n".join(f"- {line}" for line in outcome.summary().splitlines()))
    return "\n".join(lines)


def build_eval_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=ASSET,
        group_name="evals",
        description=(
            "LLM triage evaluation: each model:prompt variant on the golden dataset through the "
            "gateway, scored with ragas; HTML/JSON reports and an MLflow run"
        ),
        kinds={"mlflow", "python"},
        check_specs=[gate_check_spec(ASSET)],
    )
    def triage_eval_report(  # Dagster reads a subscripted return type as one output, not two
        context: dg.AssetExecutionContext, config: EvalConfig
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from evals.dataset import DEFAULT_DATASET
        from evals.evaluate import evaluate
        from evals.gate import DEFAULT_THRESHOLDS
        from evals.runner import parse_variants

        def progress(variant: str, done: int, total: int) -> None:
            if done == total:
                context.log.info(f"{variant}: {total} cases answered and scored")

        evaluation = evaluate(
            settings,
            variants=parse_variants(config.models or settings.evals_models),
            dataset_path=Path(config.dataset) if config.dataset else DEFAULT_DATASET,
            thresholds_path=Path(config.thresholds) if config.thresholds else DEFAULT_THRESHOLDS,
            case_ids=config.cases,
            progress=progress,
        )
        result, outcome, paths = evaluation.result, evaluation.outcome, evaluation.paths
        scores: dict[str, Any] = {
            f"{v.variant}/{metric}": dg.MetadataValue.float(value)
            for v in result.variants
            for metric, value in v.metrics.items()
            if value is not None
        }
        summary = outcome.summary()
        (context.log.info if outcome.passed else context.log.error)(summary)
        return dg.MaterializeResult(
            metadata={
                "run_id": result.run_id,
                "dataset": f"{result.dataset['name']} {result.dataset['version']}",
                "dataset_sha256": result.dataset["sha256"],
                "cases": result.dataset["cases"],
                "variants": [v.variant for v in result.variants],
                "report": dg.MetadataValue.path(str(paths.html)),
                "report_url": dg.MetadataValue.url(paths.html.resolve().as_uri()),
                "report_json": dg.MetadataValue.path(str(paths.json)),
                "summary": dg.MetadataValue.md(_summary_markdown(evaluation)),
                "skipped_metrics": result.skipped_metrics,
                "mlflow_run_id": evaluation.mlflow_run_id or "-",
                **scores,
            },
            check_results=[gate_check_result(evaluation)],
        )

    return triage_eval_report
