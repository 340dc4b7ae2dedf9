"""`sentinel evals run` end to end: the real gateway (in-process), reports, MLflow, the gate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.cli import app
from evals.metrics import BASE_METRICS, JUDGE_METRICS, VERDICT_EXACT_MATCH
from sentinel.settings import get_settings
from streams.triage.prompts import load_prompt

V1 = "extractive-triage:triage-v1"
TERSE = "extractive-triage:triage-terse"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SENTINEL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SENTINEL_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SENTINEL_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    for name in ("SENTINEL_GATEWAY_URL", "SENTINEL_EVALS_JUDGE_MODEL", "SENTINEL_EVALS_MODELS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_a_nightly_run_passes_triage_v1_fails_the_terse_control_and_logs_everything(
    env: Path,
) -> None:
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "gate passed" in out
    assert f"{V1}: passed" in out
    assert f"{TERSE}: control failed as expected" in out
    assert "skipped: faithfulness" in out

    html_path = Path(re.search(r"report: (\S+)", out).group(1))  # type: ignore[union-attr]
    json_path = Path(re.search(r"scores: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert html_path.parent.parent == env / "state" / "evals"
    report = json.loads(json_path.read_text())
    assert report["dataset"]["version"] == "1.0.0" and report["dataset"]["cases"] == 60
    assert report["metrics"] == list(BASE_METRICS)
    assert report["skipped_metrics"] == list(JUDGE_METRICS)
    variants = {v["variant"]: v for v in report["variants"]}
    v1, terse = variants[V1], variants[TERSE]
    for v in (v1, terse):
        assert len(v["cases"]) == 60
        assert v["parse_failures"] == 0 and v["gateway_errors"] == 0
        assert sum(sum(row.values()) for row in v["confusion"].values()) == 60
        assert len(v["per_rule"]) == 20
        assert all(set(c["scores"]) == set(BASE_METRICS) for c in v["cases"])
    for metric in BASE_METRICS:  # the degraded prompt is worse on every metric
        assert v1["metrics"][metric] > terse["metrics"][metric], metric
    assert v1["metrics"][VERDICT_EXACT_MATCH] > 0.45
    gate = report["gate"]
    assert gate["passed"] is True
    assert gate["variants"][V1]["failures"] == []
    failed = {f["metric"] for f in gate["variants"][TERSE]["failures"]}
    assert failed == set(BASE_METRICS)

    page = html_path.read_text()
    assert page.startswith("<!doctype html>")
    assert "data:image/png;base64," in page  # the chart is inline: the page stands alone
    assert "<script" not in page and 'src="http' not in page  # nothing fetched when opened
    for needle in (V1, TERSE, "core.reverse_shell", "Worst cases", "reference \\ answer"):
        assert needle in page

    accepted = json.loads((env / "state" / "evals" / "accepted.json").read_text())
    assert set(accepted["variants"]) == {V1}  # a control is never a baseline
    assert accepted["variants"][V1]["run_id"] == report["run_id"]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("triage-evals")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == report["run_id"])
    assert parent.data.params["dataset_version"] == "1.0.0"
    assert parent.data.params["dataset_sha256"] == report["dataset"]["sha256"]
    assert parent.data.metrics["gate_passed"] == 1.0
    assert parent.data.metrics[f"extractive-triage/triage-v1/{VERDICT_EXACT_MATCH}"] == (
        pytest.approx(v1["metrics"][VERDICT_EXACT_MATCH])
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"report.html", "report.json"}
    children = {r.info.run_name: r for r in runs if r.info.run_id != parent.info.run_id}
    assert set(children) == {V1, TERSE}
    for name, prompt_id in ((V1, "triage-v1"), (TERSE, "triage-terse")):
        params = children[name].data.params
        assert params["model"] == "extractive-triage"
        assert params["prompt_id"] == prompt_id
        assert params["prompt_sha256"] == load_prompt(prompt_id).sha256
        assert set(BASE_METRICS) <= set(children[name].data.metrics)

    # The next night compares with this accepted run (same deterministic scores: no regression).
    again = CliRunner().invoke(app, ["run", "--models", V1, "--no-mlflow"])
    assert again.exit_code == 0, again.output
    second = json.loads(Path(re.search(r"scores: (\S+)", again.output).group(1)).read_text())  # type: ignore[union-attr]
    assert second["gate"]["variants"][V1]["baseline_run"] == report["run_id"]
    assert len(client.search_runs([experiment.experiment_id])) == 3  # --no-mlflow logged nothing


def test_a_failing_gate_exits_one_and_says_which_metric_fell_short(env: Path) -> None:
    strict = env / "thresholds.yaml"
    strict.write_text("metrics:\n  verdict_exact_match: {min: 0.45}\n")  # and no controls
    out_dir = env / "out"
    cases = "reverse-shell-01,ransom-note-01,miner-exec-02"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--models",
            TERSE,
            "--thresholds",
            str(strict),
            "--cases",
            cases,
            "--out",
            str(out_dir),
            "--no-mlflow",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "gate failed" in result.output
    assert f"{TERSE}: FAILED: verdict_exact_match 0.000 below the minimum 0.450" in result.output
    report = json.loads((out_dir / "report.json").read_text())
    assert report["dataset"]["cases"] == 3
    assert not (env / "state" / "evals" / "accepted.json").exists()


def test_bad_input_is_refused_with_a_reason_and_every_command_has_help(env: Path) -> None:
    bad = CliRunner().invoke(app, ["run", "--models", "triage-v1", "--no-mlflow"])
    assert bad.exit_code == 2
    assert "'triage-v1' is not model:prompt" in bad.output
    unknown = CliRunner().invoke(
        app, ["run", "--models", "extractive-triage:nope", "--cases", "port-scan-01", "--no-mlflow"]
    )
    assert unknown.exit_code == 2
    assert "no prompt 'nope'" in unknown.output
    top = CliRunner().invoke(app, ["--help"])
    assert top.exit_code == 0 and "run" in top.output
    run_help = CliRunner().invoke(app, ["run", "--help"])
    assert run_help.exit_code == 0
    for option in ("--models", "--dataset", "--out", "--no-mlflow", "--thresholds", "--cases"):
        assert option in run_help.output
