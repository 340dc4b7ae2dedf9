"""Models: train and register the host-anomaly model, gate its promotion, watch feature drift."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.models.assets import feature_drift, host_anomaly_model, promotion_check
from sentinel.settings import Settings

models_daily = dg.define_asset_job(
    "models_daily",
    selection=dg.AssetSelection.groups("models"),
    description="train a host-anomaly challenger, promote it if it beats the champion, drift",
    tags={"sentinel/job": "models_daily"},
)


def build(settings: Settings) -> dg.Definitions:
    schedule = dg.ScheduleDefinition(
        name="models_daily_schedule",
        job=models_daily,
        cron_schedule="30 2 * * *",
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.lake_automation
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="a new challenger every night, on the features of the day",
    )
    return dg.Definitions(
        assets=[host_anomaly_model, feature_drift],
        asset_checks=[promotion_check],
        jobs=[models_daily],
        schedules=[schedule],
    )
