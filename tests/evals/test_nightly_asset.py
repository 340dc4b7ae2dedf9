"""The nightly Dagster slice: schedule at 02:00, the asset materializes, its gate check runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.defs.evals import build
from sentinel.settings import Settings

V1 = "extractive-triage:triage-v1"
TERSE = "extractive-triage:triage-terse"


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        lake_automation=False,
    )


def _run(
    defs: dg.Definitions, tmp_path: Path, config: dict[str, object]
) -> dg.ExecuteInProcessResult:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        return defs.resolve_job_def("nightly_evals").execute_in_process(
            instance=instance,
            run_config={"ops": {"triage_eval_report": {"config": config}}},
            raise_on_error=False,
        )


def test_the_schedule_runs_the_evaluation_job_at_two_every_night(tmp_path: Path) -> None:
    defs = build(_settings(tmp_path))
    schedule = defs.resolve_schedule_def("nightly_evals_schedule")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 2 * * *", "nightly_evals")
    assert schedule.execution_timezone == "UTC"
    job = defs.resolve_job_def("nightly_evals")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "triage_eval_report"
    }


def test_the_asset_materializes_the_reports_and_its_gate_check_passes(tmp_path: Path) -> None:
    result = _run(build(_settings(tmp_path)), tmp_path, {"models": f"{V1},{TERSE}"})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("triage_eval_report")
    meta = materialization.metadata
    report = Path(meta["report"].value)  # type: ignore[attr-defined]
    assert report.name == "report.html" and report.is_file()
    assert report.parent.parent == tmp_path / "state" / "evals"
    assert meta["report_url"].value == report.resolve().as_uri()  # type: ignore[attr-defined]
    assert meta["cases"].value == 60  # type: ignore[attr-defined]
    assert meta[f"{V1}/verdict_exact_match"].value > meta[f"{TERSE}/verdict_exact_match"].value  # type: ignore[attr-defined]
    assert "| gate | passed | control: failed |" in meta["summary"].value  # type: ignore[attr-defined]
    assert meta["mlflow_run_id"].value != "-"  # type: ignore[attr-defined]
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "triage_eval_gate_check"
    assert check.passed
    assert check.metadata["accepted_as_baseline"].value == [V1]  # type: ignore[attr-defined]


def test_a_failing_gate_fails_the_blocking_check_with_the_reason(tmp_path: Path) -> None:
    strict = tmp_path / "thresholds.yaml"
    strict.write_text("metrics:\n  verdict_exact_match: {min: 0.45}\n")  # no controls
    result = _run(
        build(_settings(tmp_path)),
        tmp_path,
        {"models": TERSE, "thresholds": str(strict), "cases": ["reverse-shell-01", "bad-ip-01"]},
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    failures = check.metadata["failures"].value  # type: ignore[attr-defined]
    assert failures == {TERSE: ["verdict_exact_match 0.000 below the minimum 0.450"]}
    assert check.description is not None and "FAILED" in check.description
