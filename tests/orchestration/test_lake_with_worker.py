"""The whole path: replay → detection worker (alerts, dead letters) → lake_hourly → every layer."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from agents.replay import replay_to_kafka
from agents.scenarios import generate, malformed_records
from sentinel.kafka import ALERTS, EVENTS, EVENTS_DLQ, offsets
from tests.orchestration.conftest import Lake, recent_start
from tests.streams.conftest import StreamEnv

pytestmark = pytest.mark.kafka


def test_a_replay_through_the_worker_lands_every_layer_exactly(
    stream_env: StreamEnv, tmp_path: Path
) -> None:
    count, bad = 4_000, 9
    events = list(generate("mixed", count, seed=21, start=recent_start(60)))
    malformed = malformed_records(bad, seed=21)
    stream_env.worker().start()
    summary = replay_to_kafka(
        [*events[:2000], *malformed, *events[2000:]], stream_env.settings, EVENTS
    )
    assert summary.errors == 0
    stream_env.wait_committed(count + bad)
    alerts = sum(offsets.end_offsets(stream_env.settings, ALERTS).values())
    assert alerts > 0

    settings = stream_env.settings.model_copy(
        update={"lake_landing_workers": 1, "lake_automation": False}
    )
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        lake = Lake(settings, {"events": EVENTS, "alerts": ALERTS, "dlq": EVENTS_DLQ}, instance)
        result = lake.run()

    assert result.success
    assert len(lake.bronze("events")) == count
    assert len(lake.bronze("alerts")) == alerts
    dead = lake.bronze("dlq")
    assert len(dead) == bad
    assert sorted(r[1] for r in dead) == sorted(malformed)  # the original bytes, untouched
    assert lake.query("SELECT count(DISTINCT event_id), count(*) FROM silver.silver_events") == [
        (count, count)
    ]
    per_kind = dict(lake.query("SELECT kind, count(*) FROM silver.silver_events GROUP BY kind"))
    for kind, n in per_kind.items():
        assert lake.query(f"SELECT count(*) FROM silver.silver_{kind}_events") == [(n,)]
    assert lake.query("SELECT sum(events) FROM gold.host_activity_5m") == [(count,)]
    assert lake.query("SELECT count(*) FROM silver.silver_dead_letters") == [(bad,)]
    rules = {r for (r,) in lake.query("SELECT DISTINCT rule_id FROM gold.alert_rollup_daily")}
    assert len(rules) >= 8  # the mixed scenario holds every attack
