"""One evaluation end to end, as the CLI and the nightly Dagster asset run it: evaluate every
variant, gate the result, write the reports, accept what passed, log to MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evals.dataset import DEFAULT_DATASET, load_dataset
from evals.gate import (
    DEFAULT_THRESHOLDS,
    GateOutcome,
    accept,
    gate,
    load_baselines,
    load_thresholds,
)
from evals.report import ReportPaths, log_to_mlflow, write_reports
from evals.runner import EvalResult, Variant, new_run_id, parse_variants, run_evaluation
from sentinel.settings import Settings


@dataclass(frozen=True)
class Evaluation:
    result: EvalResult
    outcome: GateOutcome
    paths: ReportPaths
    accepted: list[str]  # variants that became the accepted baseline
    mlflow_run_id: str | None


def evaluate(
    settings: Settings,
    *,
    variants: list[Variant] | None = None,
    dataset_path: Path = DEFAULT_DATASET,
    out_dir: Path | None = None,
    thresholds_path: Path = DEFAULT_THRESHOLDS,
    mlflow: bool = True,
    case_ids: list[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Evaluation:
    """Reports go to `out_dir` (default `<evals_root>/<run id>/`); baselines live in evals_root."""
    thresholds = load_thresholds(thresholds_path)
    dataset = load_dataset(dataset_path)
    if case_ids:
        dataset = dataset.subset(case_ids)
    run_id = new_run_id()
    result = run_evaluation(
        settings,
        dataset,
        variants or parse_variants(settings.evals_models),
        run_id=run_id,
        progress=progress,
    )
    root = settings.evals_root
    outcome = gate(result, load_baselines(root), thresholds)
    paths = write_reports(result, outcome, thresholds, out_dir or root / run_id)
    accepted = accept(result, outcome, root)
    run = (
        log_to_mlflow(
            result,
            outcome,
            paths,
            tracking_uri=settings.mlflow_uri,
            artifact_root=settings.mlflow_artifact_root,
        )
        if mlflow
        else None
    )
    return Evaluation(result, outcome, paths, accepted, run)
