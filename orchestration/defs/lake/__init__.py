"""Lake: the dbt silver and gold models, the `lake_hourly` job and its schedule."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.lake.assets import dbt_model_assets
from orchestration.lib.bronze import LakePaths
from orchestration.lib.dbt import ensure_manifest
from sentinel.settings import Settings

# Kubernetes sizes (dagster-k8s). A job's `dagster-k8s/config` tag sizes its run pod only, which
# just coordinates; the steps (landing, dbt, gates) do the work, sized by the k8s executor.
LAKE_RUN_K8S = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    }
}
LAKE_STEP_K8S = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        }
    }
}

lake_hourly = dg.define_asset_job(
    "lake_hourly",
    selection=dg.AssetSelection.groups("ingest", "lake", "quality", "features"),
    description="land new Kafka records, build silver and gold with dbt, gate them, then Feast",
    tags={"dagster-k8s/config": LAKE_RUN_K8S, "sentinel/job": "lake_hourly"},
)


def build(settings: Settings) -> dg.Definitions:
    # Parsed with the lake's own DuckDB path: runs on this lake then reuse dbt's partial parse.
    manifest = ensure_manifest(LakePaths(settings.lake_root).duckdb.resolve())
    schedule = dg.ScheduleDefinition(
        name="lake_hourly_schedule",
        job=lake_hourly,
        cron_schedule="0 * * * *",
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.lake_automation
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="the lake every hour, whatever the lag",
    )
    return dg.Definitions(
        assets=dbt_model_assets(manifest), jobs=[lake_hourly], schedules=[schedule]
    )
