"""Landing Kafka into bronze on the real broker: exact rows, offsets as cursor, crash safety."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import dagster as dg
import duckdb
import orjson
import pytest
from kafka import KafkaProducer

from agents.scenarios import generate, malformed_records
from orchestration.lib import landing
from orchestration.lib.bronze import LakePaths
from orchestration.lib.landing import LandingError, LandingJob, land, read_ledger
from streams.validation import DeadLetter
from tests.orchestration.conftest import Lake, recent_start

pytestmark = pytest.mark.kafka


def _events(count: int, seed: int = 3) -> list[dict[str, Any]]:
    return list(generate("mixed", count, seed=seed, start=recent_start()))


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [mat] = [m for m in result.asset_materializations_for_node(asset)] or [None]
    assert mat is not None, f"{asset} was not materialized"
    return {k: v.value for k, v in mat.metadata.items()}


def _job(lake: Lake, table: str = "events") -> LandingJob:
    resources = lake.definitions().resources
    return resources["lake"].landing_job(table, resources["kafka"])


def test_landing_writes_exactly_the_valid_events_and_quarantines_the_rest(lake: Lake) -> None:
    events = _events(2_000)
    bad = malformed_records(7, seed=1)
    lake.produce([*events[:1000], *bad, *events[1000:]])

    result = lake.run("land_bronze")

    rows = lake.bronze("events")
    assert len(rows) == 2_000
    assert {r[0] for r in rows} == {e["id"] for e in events}
    meta = _metadata(result, "bronze_events")
    assert (meta["rows"], meta["rejected"], meta["lag"]) == (2_000, 7, 0)
    assert meta["dagster/row_count"] == 2_000
    assert sum(int(r.split("..")[1]) + 1 for r in meta["offset_ranges"].values()) == 2_007

    paths = LakePaths(lake.settings.lake_root)
    quarantined = duckdb.sql(
        f"SELECT reason FROM read_parquet('{paths.quarantine(lake.topics['events'])}/*/*/*.parquet')"
    ).fetchall()
    assert len(quarantined) == 7
    assert all(reason.startswith(("event:", "not JSON")) for (reason,) in quarantined)

    # Files sit in date=/hour= folders of their events' time, named by partition and offsets.
    for file in paths.bronze(lake.topics["events"]).glob("date=*/hour=*/*.parquet"):
        match = re.fullmatch(r"p(\d{3})-(\d{12})-(\d{12})\.parquet", file.name)
        assert match, file.name
        date, hour = file.parent.parent.name[5:], file.parent.name[5:]
        stamps = duckdb.sql(f"SELECT DISTINCT strftime(event_ts, '%Y-%m-%d %H') FROM '{file}'")
        assert stamps.fetchall() == [(f"{date} {hour}",)]


def test_a_rerun_lands_only_what_is_new(lake: Lake) -> None:
    first, second = _events(1_500, seed=4)[:1_000], _events(1_500, seed=4)[1_000:]
    lake.produce(first)
    lake.run("land_bronze")
    again = lake.run("land_bronze")
    assert _metadata(again, "bronze_events")["rows"] == 0

    lake.produce(second)
    third = lake.run("land_bronze")
    assert _metadata(third, "bronze_events")["rows"] == 500
    ids = [r[0] for r in lake.bronze("events")]
    assert len(ids) == len(set(ids)) == 1_500


def test_a_crash_between_write_and_commit_neither_duplicates_nor_drops(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events(3_000, seed=5)
    lake.produce(events)
    job = _job(lake)
    from kafka import KafkaConsumer

    real_commit = KafkaConsumer.commit

    def crash(self: Any, offsets: Any = None) -> None:
        raise RuntimeError("power cut after the files were written")

    monkeypatch.setattr(KafkaConsumer, "commit", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        land(job)
    assert len(lake.bronze("events")) == 3_000  # written and in the ledger, not committed

    monkeypatch.setattr(KafkaConsumer, "commit", real_commit)
    report = land(job)
    assert report.rows == 0  # the ledger says it is landed: the commit is repaired, not re-landed
    assert report.lag == 0
    ids = [r[0] for r in lake.bronze("events")]
    assert len(ids) == len(set(ids)) == 3_000


def test_a_crash_in_the_middle_of_a_chunk_lands_its_records_again_once(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half an hour each side of an hour boundary: every partition's chunk has two hour folders.
    hour = recent_start().replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=1, minutes=30)
    events = list(generate("mixed", 3_000, seed=6, start=start, events_per_second=1.0))
    lake.produce(events)
    job = _job(lake)
    real_write = landing._write_atomic
    calls = Counter[str]()

    def write_then_crash(table: Any, path: Any) -> int:
        calls["files"] += 1
        if calls["files"] == 2:  # the first file of the chunk is in place, the ledger is not
            raise OSError("disk full")
        return real_write(table, path)

    monkeypatch.setattr(landing, "_write_atomic", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        land(job)
    monkeypatch.setattr(landing, "_write_atomic", real_write)

    report = land(job)
    assert report.removed_orphans, "the half-written chunk's file should have been removed"
    ids = [r[0] for r in lake.bronze("events")]
    assert len(ids) == len(set(ids)) == 3_000
    assert set(ids) == {e["id"] for e in events}


def test_a_reset_consumer_group_does_not_land_the_same_offsets_twice(lake: Lake) -> None:
    lake.produce(_events(1_000, seed=8))
    lake.run("land_bronze")
    from sentinel.kafka.clients import admin_client

    admin = admin_client(lake.settings)
    try:
        admin.delete_groups([f"{lake.settings.lake_consumer_group}.events"])
    finally:
        admin.close()
    result = lake.run("land_bronze")
    assert _metadata(result, "bronze_events")["rows"] == 0
    assert len(lake.bronze("events")) == 1_000
    ledger = read_ledger(LakePaths(lake.settings.lake_root), lake.topics["events"])
    assert sum(e.last - e.first + 1 for e in ledger) == 1_000


def test_landing_splits_partitions_over_processes_without_losing_a_row(lake: Lake) -> None:
    events = _events(4_000, seed=9)
    lake.produce(events)
    report = land(_job(lake), workers=2, parallel_min=0)  # processes even for a small backlog
    assert (report.rows, report.lag) == (4_000, 0)
    assert sorted(report.partitions) == [0, 1, 2]
    assert {r[0] for r in lake.bronze("events")} == {e["id"] for e in events}


def test_dead_letters_land_with_their_bytes_reason_and_source(lake: Lake) -> None:
    producer = KafkaProducer(bootstrap_servers=lake.settings.kafka_bootstrap)
    letters = [
        DeadLetter(b"h1", b"{not json", "not JSON: unexpected character", "validate", "ev", 2, 41),
        DeadLetter(None, b"\xff\xfe", "not UTF-8", "validate", "ev", 0, 7),
    ]
    for d in letters:
        producer.send(lake.topics["dlq"], key=d.key, value=d.value, headers=d.headers())
    producer.flush()
    producer.close()

    lake.run("land_bronze")

    rows = sorted(lake.bronze("dlq"), key=lambda r: r[6])
    assert [(r[0], r[1], r[2], r[3], r[5], r[6]) for r in rows] == [
        (None, b"\xff\xfe", "not UTF-8", "validate", 0, 7),
        ("h1", b"{not json", "not JSON: unexpected character", "validate", 2, 41),
    ]


def test_the_lag_sensor_asks_for_a_landing_only_past_its_threshold(lake: Lake) -> None:
    defs = lake.definitions(lake_lag_threshold=500)
    sensor = defs.resolve_sensor_def("bronze_lag_sensor")
    lake.produce(_events(300, seed=10))
    with dg.build_sensor_context(instance=lake.instance, resources=defs.resources) as ctx:
        skipped = sensor(ctx)
    assert isinstance(skipped, dg.SkipReason)
    assert "lag 300 < 500" in (skipped.skip_message or "")

    lake.produce(_events(300, seed=11))
    with dg.build_sensor_context(instance=lake.instance, resources=defs.resources) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests or []
    assert request.tags["sentinel/lag"] == "600"

    lake.run("land_bronze")
    with dg.build_sensor_context(instance=lake.instance, resources=defs.resources) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)


def test_a_missing_topic_fails_with_a_message_naming_it(lake: Lake) -> None:
    lake.topics["alerts"] = "no.such.topic"
    result = lake.run("land_bronze", raise_on_error=False)
    assert not result.success
    errors = [
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error
    ]
    assert any("topic 'no.such.topic' does not exist" in m for m in errors), errors


def test_bronze_rows_keep_the_event_as_received(lake: Lake) -> None:
    [event] = _events(1, seed=12)
    lake.produce([event])
    lake.run("land_bronze")
    [row] = lake.bronze("events")
    assert orjson.loads(row[4]) == event
    assert (row[0], row[2], row[3]) == (event["id"], event["host"]["id"], event["kind"])


def test_nanosecond_timestamps_land_with_microseconds(lake: Lake) -> None:
    [event] = _events(1, seed=13)
    event["ts"] = event["ts"][:19] + ".123456789Z"  # the contract allows up to 9 digits
    lake.produce([event])
    lake.run("land_bronze")
    [row] = lake.bronze("events")
    assert row[1].isoformat().endswith(".123456+00:00")


def test_a_recreated_topic_fails_landing_with_what_to_do(lake: Lake) -> None:
    from kafka.errors import KafkaError

    from sentinel.kafka import TopicSpec, create_topics
    from sentinel.kafka.clients import admin_client

    lake.produce(_events(500, seed=14))
    lake.run("land_bronze")
    topic = lake.topics["events"]
    admin = admin_client(lake.settings)
    try:
        admin.delete_topics([topic])
        for _ in range(60):  # deletion completes asynchronously
            try:
                create_topics(admin, [TopicSpec(topic, 3)])
                break
            except KafkaError:
                time.sleep(0.5)
    finally:
        admin.close()
    lake.produce(_events(5, seed=15))

    with pytest.raises(LandingError, match="the topic was recreated or truncated") as raised:
        land(_job(lake))
    assert "sentinel lake reset" in str(raised.value)
    assert len(lake.bronze("events")) == 500  # nothing of the old landing was touched


def test_lake_reset_needs_yes_then_deletes_lake_and_offsets(lake: Lake) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    lake.produce(_events(200, seed=16))
    lake.run("land_bronze")
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(lake.settings.state_dir),
        SENTINEL_KAFKA_BOOTSTRAP=lake.settings.kafka_bootstrap,
        SENTINEL_LAKE_CONSUMER_GROUP=lake.settings.lake_consumer_group,
    )
    cli = [str(Path(sys.executable).parent / "sentinel"), "lake", "reset"]
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "add --yes" in refused.stdout + refused.stderr
    assert lake.settings.lake_root.exists()

    done = subprocess.run([*cli, "--yes"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not lake.settings.lake_root.exists()
    report = land(_job(lake))  # from the start again: the group's offsets are gone too
    assert report.rows == 200


def test_partition_groups_balance_records_and_put_the_heaviest_first() -> None:
    from orchestration.lib.landing import _balanced

    pending = {0: 500, 1: 100, 2: 0, 3: 300, 4: 250}
    groups = _balanced(pending, 2)
    assert groups == [[0, 1], [3, 4]]  # 600 and 550 records; partition 2 has nothing to land
    assert _balanced({0: 0, 1: 0}, 2) == []
    assert _balanced(pending, 8) == [[0], [3], [4], [1]]
