"""`sentinel evals ...`: run the triage evaluation on demand, as the nightly schedule does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sentinel.console import err, out, settings_or_exit

app = typer.Typer(
    help="LLM triage evaluations: golden dataset, ragas metrics, reports, the gate.",
    no_args_is_help=True,
)


@app.callback()
def evals() -> None:
    """LLM triage evaluations: golden dataset, ragas metrics, reports, the gate."""
    # A callback keeps `run` a sub-command (typer folds a lone command into the app).


@app.command("run")
def run(
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="variants as model:prompt, comma-separated (default: SENTINEL_EVALS_MODELS)",
        ),
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(help="golden dataset JSONL (default: evals/datasets/triage-golden-v1.jsonl)"),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="where report.html and report.json go (default: <evals_root>/<run id>)"
        ),
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="gate thresholds (default: evals/thresholds.yaml)")
    ] = None,
    cases: Annotated[str | None, typer.Option(help="only these case ids, comma-separated")] = None,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="do not log the run to MLflow")
    ] = False,
) -> None:
    """Evaluate every variant on the golden dataset through the gateway, write the reports,
    and exit 1 when the gate fails (a variant below its thresholds or regressed)."""
    from evals.client import GatewayCallError
    from evals.dataset import DEFAULT_DATASET, DatasetError
    from evals.evaluate import evaluate
    from evals.gate import DEFAULT_THRESHOLDS, ThresholdsError
    from evals.runner import VariantError, parse_variants
    from sentinel.logs import configure_logging

    settings = settings_or_exit()
    configure_logging(settings)
    # One line per gateway request would drown the progress; the gateway's request log keeps them.
    logging.getLogger("services.gateway.requests").setLevel(logging.WARNING)
    try:
        variants = parse_variants(models or settings.evals_models)
    except VariantError as exc:
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    path = dataset or DEFAULT_DATASET
    err.print(
        f"evaluating {', '.join(v.name for v in variants)} on {path}"
        f" (judge: {settings.evals_judge_model or 'none, judge metrics skipped'})",
        highlight=False,
    )
    bars: dict[str, int] = {}

    def progress(variant: str, done: int, total: int) -> None:
        # One line per variant every tenth of the cases: enough in a CI log.
        step = max(total // 10, 1)
        if done == total or done - bars.get(variant, 0) >= step:
            bars[variant] = done
            err.print(f"  {variant}: {done}/{total} cases", highlight=False)

    try:
        evaluation = evaluate(
            settings,
            variants=variants,
            dataset_path=path,
            out_dir=out_dir,
            thresholds_path=thresholds or DEFAULT_THRESHOLDS,
            mlflow=not no_mlflow,
            case_ids=[c.strip() for c in cases.split(",") if c.strip()] if cases else None,
            progress=progress,
        )
    except (DatasetError, ThresholdsError, VariantError, GatewayCallError) as exc:
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None

    result, outcome = evaluation.result, evaluation.outcome
    table = Table("metric", *(v.variant for v in result.variants), title=f"run {result.run_id}")
    for metric in result.metrics:
        table.add_row(
            metric,
            *(
                "-" if v.metrics.get(metric) is None else f"{v.metrics[metric]:.3f}"
                for v in result.variants
            ),
        )
    table.add_row("answered", *(f"{v.answered}/{len(v.cases)}" for v in result.variants))
    table.add_row("parse failures", *(str(v.parse_failures) for v in result.variants))
    table.add_row("gateway errors", *(str(v.gateway_errors) for v in result.variants))
    table.add_row(
        "gate",
        *(
            ("control: " if outcome.variants[v.variant].control else "")
            + ("passed" if outcome.variants[v.variant].passed else "failed")
            for v in result.variants
        ),
    )
    out.print(table)
    for metric in result.skipped_metrics:
        out.print(f"skipped: {metric} (no judge model: set SENTINEL_EVALS_JUDGE_MODEL)")
    out.print(outcome.summary(), highlight=False)
    out.print(f"report: {evaluation.paths.html}", highlight=False)
    out.print(f"scores: {evaluation.paths.json}", highlight=False)
    if evaluation.accepted:
        out.print(f"accepted as baseline: {', '.join(evaluation.accepted)}", highlight=False)
    if evaluation.mlflow_run_id:
        out.print(
            f"mlflow: run {evaluation.mlflow_run_id} in experiment triage-evals "
            f"({settings.mlflow_uri})",
            highlight=False,
        )
    if not outcome.passed:
        out.print("[red]gate failed[/]")
        raise typer.Exit(1)
    out.print("[green]gate passed[/]")
