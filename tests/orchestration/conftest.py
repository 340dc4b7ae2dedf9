"""Fixtures for lake tests: fresh topics on the session broker, a private lake and Dagster home."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from agents.replay import replay_to_kafka
from orchestration.definitions import build
from orchestration.lib.resources import build_resources
from sentinel.settings import Settings
from tests.streams.conftest import StreamEnv, stream_env  # noqa: F401  (re-exported fixture)


@dataclass
class Lake:
    """A lake of its own: settings, topic names, and helpers to produce, run and query."""

    settings: Settings
    topics: dict[str, str]
    instance: dg.DagsterInstance

    def definitions(self, **overrides: Any) -> dg.Definitions:
        settings = self.settings.model_copy(update=overrides)
        return build(settings, build_resources(settings, self.topics))

    def run(
        self, job: str = "lake_hourly", *, raise_on_error: bool = True, **overrides: Any
    ) -> dg.ExecuteInProcessResult:
        return (
            self.definitions(**overrides)
            .resolve_job_def(job)
            .execute_in_process(instance=self.instance, raise_on_error=raise_on_error)
        )

    def produce(self, records: list[Any], table: str = "events") -> None:
        summary = replay_to_kafka(records, self.settings, self.topics[table])
        assert summary.errors == 0, summary.first_error

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.settings.lake_root / "lake.duckdb"), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def bronze(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of a bronze table, straight from its Parquet files."""
        glob = (
            self.settings.lake_root
            / "bronze"
            / self.topics[table]
            / "date=*"
            / "hour=*"
            / "*.parquet"
        )
        return duckdb.sql(f"SELECT * FROM read_parquet('{glob}')").fetchall()


@pytest.fixture
def lake(tmp_path: Path, kafka: Settings, new_topic: Callable[..., str]) -> Iterator[Lake]:
    settings = kafka.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "lake_consumer_group": f"test-lake-{uuid.uuid4().hex[:8]}",
            "lake_landing_workers": 1,
            "lake_automation": False,
        }
    )
    topics = {t: new_topic(partitions=3, prefix=f"lake-{t}") for t in ("events", "alerts", "dlq")}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Lake(settings, topics, instance)


def recent_start(span_s: float = 600) -> datetime:
    """An event-time start that keeps a replay in the past and fresh for the gates."""
    return datetime.now(UTC) - timedelta(seconds=span_s)
