"""A lake with enough history to train on, its Feast state and an MLflow store: built once per
session (tests/conftest.py `ml_state`) by the real jobs, `lake_hourly` then `models_daily`.

40,000 events of the mixed scenario from 12 hosts at 8 events/s of event time: about 83 minutes,
so 17 windows per host and 9 attack episodes, ending a few minutes before now.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


@dataclass
class MlState:
    settings: Settings
    topics: dict[str, str]
    instance: dg.DagsterInstance
    lake_result: dg.ExecuteInProcessResult
    models_result: dg.ExecuteInProcessResult

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
        }
    )
    topics = {t: f"ml-{t}.{uuid.uuid4().hex[:12]}" for t in ("events", "alerts", "dlq")}
    admin = admin_client(kafka)
    try:
        create_topics(admin, [TopicSpec(name, 3) for name in topics.values()])
    finally:
        admin.close()
    span = EVENTS / EVENTS_PER_SECOND
    start = datetime.now(UTC) - timedelta(seconds=span + 120)
    events = generate(
        "mixed", EVENTS, seed=11, start=start, hosts=HOSTS, events_per_second=EVENTS_PER_SECOND
    )
    summary = replay_to_kafka(events, settings, topics["events"])
    assert summary.errors == 0, summary.first_error
    state = MlState(settings, topics, instance, None, None)  # type: ignore[arg-type]
    state.lake_result = state.run("lake_hourly")
    state.models_result = state.run("models_daily")
    return state
