"""The Dagster code location: it loads cleanly, and its graph is the one this test spells out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from orchestration.definitions import build
from sentinel.settings import PROJECT_ROOT, Settings

# A snapshot of the graph: a change to it should be a decision, seen in review.
GROUPS = {
    "ingest": {"bronze_events", "bronze_alerts", "bronze_dlq"},
    "lake": {
        "silver_events",
        "silver_proc_events",
        "silver_file_events",
        "silver_net_events",
        "silver_dns_events",
        "silver_auth_events",
        "silver_alerts",
        "host_activity_5m",
        "host_features_5m",
        "host_labels_5m",
        "dns_domain_stats",
        "alert_rollup_daily",
    },
    "quality": {"silver_dead_letters"},
    "features": {"feast_repository", "online_features"},
    "models": {"host_anomaly_model", "feature_drift"},
    "evals": {"triage_eval_report"},
}
GATES = {
    "silver_events",
    "silver_dns_events",
    "silver_alerts",
    "host_activity_5m",
    "host_features_5m",
    "dns_domain_stats",
    "alert_rollup_daily",
}


def test_workspace_code_location_loads_without_errors_or_warnings() -> None:
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location orchestration.definitions" in output
    # The command's own notice that `dg check defs` supersedes it is not about our code.
    noisy = [
        line
        for line in output.splitlines()
        if ("Warning" in line or "ERROR" in line) and "definitions_validate_command" not in line
    ]
    assert not noisy, noisy


def test_the_asset_graph_has_the_assets_groups_and_gates_of_the_lake() -> None:
    defs = build(Settings())
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            groups.setdefault(node.group_name, set()).add(key.to_user_string())
    assert groups == GROUPS

    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    gates = {asset for asset, name in checks if name.endswith("_quality_check")}
    assert gates == GATES
    for asset in GATES:
        spec = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(asset), f"{asset}_quality_check"))
        assert spec.blocking, f"{asset}'s gate must block what depends on it"
    # Every dbt model's tests are checks too: at least unique + not_null on each key.
    dbt_checks = {asset for asset, name in checks if name.startswith("unique")}
    assert GROUPS["lake"] - {"host_activity_5m", "alert_rollup_daily"} <= dbt_checks | GATES

    # Gold reads silver, which reads bronze: the graph is one piece.
    assert dg.AssetKey("bronze_events") in graph.get(dg.AssetKey("silver_events")).parent_keys
    parents = graph.get(dg.AssetKey("host_activity_5m")).parent_keys
    assert dg.AssetKey("silver_dns_events") in parents
    # Feast reads the gated feature table; training reads Feast and the labels; drift the model.
    assert graph.get(dg.AssetKey("feast_repository")).parent_keys == {
        dg.AssetKey("host_features_5m")
    }
    assert graph.get(dg.AssetKey("host_anomaly_model")).parent_keys == {
        dg.AssetKey("feast_repository"),
        dg.AssetKey("host_labels_5m"),
    }
    assert dg.AssetKey("host_anomaly_model") in graph.get(dg.AssetKey("feature_drift")).parent_keys
    promotion = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey("host_anomaly_model"), "host_anomaly_promotion")
    )
    assert promotion.blocking  # drift waits for the decision (a rejection is only a warning)
    drift = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey("feature_drift"), "feature_drift_check")
    )
    assert not drift.blocking
    gate = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey("triage_eval_report"), "triage_eval_gate_check")
    )
    assert gate.blocking  # a failed evaluation gate is an error, not a warning


def test_jobs_schedules_and_sensors_are_wired_to_the_settings() -> None:
    on = build(Settings(lake_automation=True))
    off = build(Settings(lake_automation=False, dagster_executor="in_process"))
    hourly = on.resolve_job_def("lake_hourly")
    k8s = json.loads(hourly.tags["dagster-k8s/config"])
    assert k8s["container_config"]["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert on.resolve_job_def("land_bronze")
    schedule = on.resolve_schedule_def("lake_hourly_schedule")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 * * * *", "lake_hourly")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert off.resolve_schedule_def("lake_hourly_schedule").default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )
    sensor = on.resolve_sensor_def("bronze_lag_sensor")
    assert sensor.job_name == "land_bronze"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert off.resolve_sensor_def("bronze_lag_sensor").default_status == (
        dg.DefaultSensorStatus.STOPPED
    )
    models = on.resolve_schedule_def("models_daily_schedule")
    assert (models.cron_schedule, models.job_name) == ("30 2 * * *", "models_daily")
    assert off.resolve_schedule_def("models_daily_schedule").default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )
    evals = on.resolve_schedule_def("nightly_evals_schedule")
    assert (evals.cron_schedule, evals.job_name) == ("0 2 * * *", "nightly_evals")
    assert off.resolve_schedule_def("nightly_evals_schedule").default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )
    assert hourly.executor_def.name == "multiprocess"
    assert off.resolve_job_def("lake_hourly").executor_def.name == "in_process"
