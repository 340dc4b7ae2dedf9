"""Replay into the real broker and back: ids, contents, keys and headers survive the round trip."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from agents.replay import encode, replay_to_kafka, write_jsonl
from agents.scenarios import generate, malformed_records
from sentinel.kafka import EVENTS
from sentinel.settings import Settings

pytestmark = pytest.mark.kafka


def _consume_from(
    settings: Settings, topic: str, start: dict[TopicPartition, int], expected: int
) -> list[object]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def _end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def test_replayed_events_round_trip_through_the_events_topic(kafka: Settings) -> None:
    n = 5_000
    events = list(generate("mixed", n, seed=42))
    start = _end_offsets(kafka, EVENTS)
    assert len(start) == kafka.kafka_partitions

    summary = replay_to_kafka(events, kafka, EVENTS)
    assert (summary.sent, summary.errors) == (n, 0)

    records = _consume_from(kafka, EVENTS, start, n)
    assert len(records) == n
    by_id = {e["id"]: e for e in events}
    received = {}
    for record in records:
        event = orjson.loads(record.value)
        received[event["id"]] = event
        assert record.key == event["host"]["id"].encode(), "key = host id"
        headers = dict(record.headers)
        assert headers["traceparent"].startswith(b"00-") and len(headers["traceparent"]) == 55
    assert received.keys() == by_id.keys()
    assert received == by_id, "contents unchanged"
    # One host always lands on one partition, so per-host order holds.
    partitions_per_host: dict[str, set[int]] = {}
    for record in records:
        partitions_per_host.setdefault(record.key.decode(), set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_per_host.values())
    assert len({p for ps in partitions_per_host.values() for p in ps}) > 1


def test_raw_records_are_sent_untouched(kafka: Settings, new_topic) -> None:
    topic = new_topic(partitions=2)
    bad = malformed_records(12, seed=1)
    summary = replay_to_kafka(bad, kafka, topic)
    assert summary.sent == 12 and summary.by_kind == {"raw": 12}
    start = {TopicPartition(topic, p): 0 for p in range(2)}
    values = sorted(r.value for r in _consume_from(kafka, topic, start, 12))
    assert values == sorted(bad)


def test_paced_replay_holds_the_offered_rate(kafka: Settings, new_topic) -> None:
    topic = new_topic(partitions=1)
    summary = replay_to_kafka(generate("baseline", 2_000, seed=5), kafka, topic, rate=4_000)
    assert summary.sent == 2_000
    # 2,000 events at 4,000/s cannot finish in much under half a second.
    assert summary.elapsed_s >= 0.45


def test_write_jsonl_writes_one_event_per_line(tmp_path: Path) -> None:
    events = list(generate("dns-tunnel", 1_000, seed=9))
    path = tmp_path / "out" / "events.jsonl"
    summary = write_jsonl(events, path)
    lines = path.read_bytes().splitlines()
    assert summary.sent == len(lines) == 1_000
    assert [orjson.loads(line) for line in lines] == events
    assert summary.by_kind == {
        kind: sum(e["kind"] == kind for e in events) for kind in summary.by_kind
    }


def test_encode_keys_by_host_and_leaves_bytes_alone() -> None:
    event = next(generate("baseline", 1, seed=1))
    key, value, kind = encode(event)
    assert key == event["host"]["id"].encode() and orjson.loads(value) == event
    assert kind == event["kind"]
    assert encode(b"\x00garbage") == (None, b"\x00garbage", "raw")
