"""Dagster resources for Kafka, the lake, dbt and the models, built from the one settings object."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.lib.bronze import TABLES, LakePaths, register_bronze_views
from orchestration.lib.landing import LandingJob
from sentinel.kafka.topics import ALERTS, EVENTS, EVENTS_DLQ
from sentinel.settings import Settings


class KafkaResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the topics live, and the consumer options landing uses."""

    bootstrap: str
    client_id: str = "sentinel-lake"

    def consumer_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": 16 * 1024 * 1024,
            "fetch_max_bytes": 64 * 1024 * 1024,
            "request_timeout_ms": 60_000,
        }

    def lag(self, topic: str, group: str) -> dict[int, int]:
        """Per partition: records in `topic` that `group` has not committed yet."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            group_id=group, enable_auto_commit=False, **self.consumer_options()
        )
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            end = consumer.end_offsets(tps) if tps else {}
            start = consumer.beginning_offsets(tps) if tps else {}
            return {
                tp.partition: end[tp] - max(consumer.committed(tp) or 0, start[tp]) for tp in tps
            }
        finally:
            consumer.close(autocommit=False)


class LakeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The lake's folders and DuckDB file, the topics it lands, and the gate thresholds."""

    root: str
    events_topic: str = EVENTS
    alerts_topic: str = ALERTS
    dlq_topic: str = EVENTS_DLQ
    consumer_group: str = "sentinel-lake"
    landing_workers: int = 2
    chunk_rows: int = 200_000
    freshness_hours: float = 24.0
    future_skew_s: float = 300.0
    max_row_drop: float = 0.5

    @property
    def paths(self) -> LakePaths:
        return LakePaths(Path(self.root))

    def topics(self) -> dict[str, str]:
        """Topic per bronze table name."""
        return {"events": self.events_topic, "alerts": self.alerts_topic, "dlq": self.dlq_topic}

    def group(self, table: str) -> str:
        return f"{self.consumer_group}.{table}"

    def landing_job(self, table: str, kafka: KafkaResource) -> LandingJob:
        if table not in TABLES:
            raise ValueError(f"unknown bronze table '{table}'")
        return LandingJob(
            table,
            self.topics()[table],
            self.group(table),
            Path(self.root),
            kafka.consumer_options(),
            chunk_rows=self.chunk_rows,
        )

    def connect(self, *, read_only: bool = False) -> Any:
        import duckdb

        self.paths.root.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.paths.duckdb), read_only=read_only)

    def register_views(self) -> None:
        con = self.connect()
        try:
            register_bronze_views(con, self.paths, self.topics())
        finally:
            con.close()

    @contextmanager
    def dbt_environment(self) -> Iterator[None]:
        """The environment of the dbt process: the DuckDB path its profile reads, and cautious
        test selection, so building silver never runs a gold test that reads silver."""
        wanted = {
            "SENTINEL_LAKE_DUCKDB": str(self.paths.duckdb.resolve()),
            "DBT_INDIRECT_SELECTION": "cautious",
        }
        previous = {key: os.environ.get(key) for key in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class ModelsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Feast's state folder, the MLflow store, and the training, promotion and drift knobs."""

    feast_dir: str
    tracking_uri: str
    artifact_root: str
    model_name: str = "host-anomaly"
    feature_service: str = "host_anomaly_v1"
    holdout_fraction: float = 0.3
    promotion_min_delta: float = 0.0
    min_pr_auc: float = 0.0
    drift_threshold: float = 0.25
    drift_window_h: float = 1.0

    @property
    def feast_root(self) -> Path:
        return Path(self.feast_dir)

    def store(self) -> Any:
        from sentinel.ml.features import feature_store

        return feature_store(self.feast_root)

    def client(self) -> Any:
        from sentinel.ml.registry import configure

        return configure(self.tracking_uri)


def build_resources(settings: Settings, topics: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources of the code location, from the settings; `topics` renames bronze sources."""
    from orchestration.lib.dbt import dbt_resource

    renamed = {f"{table}_topic": topic for table, topic in (topics or {}).items()}
    return {
        "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap),
        "lake": LakeResource(
            **renamed,
            root=str(settings.lake_root),
            consumer_group=settings.lake_consumer_group,
            landing_workers=settings.lake_landing_workers,
            chunk_rows=settings.lake_chunk_rows,
            freshness_hours=settings.lake_freshness_hours,
            future_skew_s=settings.lake_future_skew_s,
            max_row_drop=settings.lake_max_row_drop,
        ),
        "dbt": dbt_resource(),
        "models": ModelsResource(
            feast_dir=str(settings.feast_root.resolve()),
            tracking_uri=settings.mlflow_uri,
            artifact_root=settings.mlflow_artifact_root,
            model_name=settings.models_name,
            feature_service=settings.models_feature_service,
            holdout_fraction=settings.models_holdout_fraction,
            promotion_min_delta=settings.models_promotion_min_delta,
            min_pr_auc=settings.models_min_pr_auc,
            drift_threshold=settings.models_drift_threshold,
            drift_window_h=settings.models_drift_window_h,
        ),
    }
