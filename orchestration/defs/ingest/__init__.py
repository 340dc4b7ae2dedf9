"""Ingest: land the Kafka topics into bronze, on a lag sensor or as part of lake_hourly."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.ingest.assets import BRONZE_ASSETS
from orchestration.defs.ingest.sensors import bronze_lag_sensor_for
from sentinel.settings import Settings

land_bronze_job = dg.define_asset_job(
    "land_bronze", selection=dg.AssetSelection.groups("ingest"), description="land new records"
)


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=BRONZE_ASSETS,
        jobs=[land_bronze_job],
        sensors=[
            bronze_lag_sensor_for(
                land_bronze_job,
                settings.lake_lag_threshold,
                settings.lake_sensor_interval_s,
                settings.lake_automation,
            )
        ],
    )
