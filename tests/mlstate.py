"""A lake with enough history to train on, its Feast state and an MLflow store: built once per
session (tests/conftest.py `ml_state`) by the real jobs, `lake_hourly` then `models_daily`.

40,000 events of the mixed scenario from 12 hosts at 8 events/s of event time: about 83 minutes,
so 17 windows per host and 9 attack episodes, ending a few minutes before now.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from orchestration.definitions import build
from orchestration.lib.resources import build_resources
from sentinel.kafka import TopicSpec, create_topics
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings

EVENTS = 40_000
HOSTS = 12
EVENTS_PER_SECOND = 8.0
SEED = 11


@dataclass
class MlState:
    settings: Settings
    topics: dict[str, str]
    instance: dg.DagsterInstance
    start: datetime  # event time of the first generated event
    lake_result: dg.ExecuteInProcessResult
    models_result: dg.ExecuteInProcessResult

    def events(self) -> Any:
        """The generated events again, the same ones that were produced."""
        return generate(
            "mixed",
            EVENTS,
            seed=SEED,
            start=self.start,
            hosts=HOSTS,
            events_per_second=EVENTS_PER_SECOND,
        )

    def definitions(self, **overrides: Any) -> dg.Definitions:
        settings = self.settings.model_copy(update=overrides)
        return build(settings, build_resources(settings, self.topics))

    def run(
        self, job: str, *, run_config: dict[str, Any] | None = None, **overrides: Any
    ) -> dg.ExecuteInProcessResult:
        return (
            self.definitions(**overrides)
            .resolve_job_def(job)
            .execute_in_process(instance=self.instance, run_config=run_config)
        )

    def query(self, sql: str, params: list[Any] | None = None) -> Any:
        con = duckdb.connect(str(self.settings.lake_root / "lake.duckdb"), read_only=True)
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()


def build_ml_state(tmp: Path, kafka: Settings, instance: dg.DagsterInstance) -> MlState:
    settings = kafka.model_copy(
        update={
            "state_dir": tmp / "state",
            "lake_consumer_group": f"test-ml-{uuid.uuid4().hex[:8]}",
            "lake_landing_workers": 1,
            "lake_automation": False,
            "models_holdout_fraction": 0.4,
        }
    )
    topics = {t: f"ml-{t}.{uuid.uuid4().hex[:12]}" for t in ("events", "alerts", "dlq")}
    admin = admin_client(kafka)
    try:
        create_topics(admin, [TopicSpec(name, 3) for name in topics.values()])
    finally:
        admin.close()
    # Aligned to a window boundary, so every session cuts the same windows and trains the same
    # models (the seeds are fixed): the promotion tests compare deterministic numbers.
    span = EVENTS / EVENTS_PER_SECOND
    earliest = datetime.now(UTC).timestamp() - span - 420
    start = datetime.fromtimestamp(earliest // 300 * 300, UTC)
    state = MlState(settings, topics, instance, start, None, None)  # type: ignore[arg-type]
    summary = replay_to_kafka(state.events(), settings, topics["events"])
    assert summary.errors == 0, summary.first_error
    state.lake_result = state.run("lake_hourly")
    state.models_result = state.run("models_daily")
    return state
