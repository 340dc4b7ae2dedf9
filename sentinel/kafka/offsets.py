"""Offsets and reads for tooling (demo, tests, benchmarks): where a topic ends, what a group
committed, and reading a topic from given offsets up to its current end."""

from __future__ import annotations

import time
from typing import Any

from sentinel.settings import Settings


def _consumer(settings: Settings, group_id: str | None = None, **options: Any) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        **options,
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> next offset to be written."""
    return _offsets(settings, topic, "end_offsets")


def beginning_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> oldest offset still kept (retention deletes from the front)."""
    return _offsets(settings, topic, "beginning_offsets")


def _offsets(settings: Settings, topic: str, which: str) -> dict[int, int]:
    from kafka import TopicPartition

    consumer = _consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: off for tp, off in getattr(consumer, which)(tps).items()}
    finally:
        consumer.close()


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """Partition -> offset the group committed (0 where it has none); does not join the group."""
    from kafka import TopicPartition

    consumer = _consumer(settings, group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: consumer.committed(tp) or 0 for tp in tps}
    finally:
        consumer.close()


def wait_caught_up(
    settings: Settings, group: str, topic: str, timeout_s: float, on_wait: Any = None
) -> bool:
    """True once the group has committed up to the end of `topic` (as it was when called)."""
    target = end_offsets(settings, topic)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = committed(settings, group, topic)
        if all(done.get(p, 0) >= end for p, end in target.items()):
            return True
        if on_wait is not None:
            on_wait(sum(done.values()), sum(target.values()))
        time.sleep(1)
    return False


def read_from(settings: Settings, topic: str, start: dict[int, int] | None = None) -> list[Any]:
    """Every record from `start` (default: the beginning) up to the end as of now."""
    from kafka import TopicPartition

    consumer = _consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=2000, max_records=10_000).values():
                records.extend(
                    r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)]
                )
        return records
    finally:
        consumer.close()
