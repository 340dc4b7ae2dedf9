"""Rebuild window state after a restart or rebalance by re-reading recent events, silently.

Windows live in the engine's memory. When a worker gets a partition, the events just before its
committed offset (the last `streams_warmup_s` of event time, found with the Kafka timestamps,
which replay and sensors set to the event time) are run through the rules again without
publishing, so a threshold half-reached before a crash is still reached after it.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from sentinel.logs import get_logger
from sentinel.settings import Settings
from streams.detection.pipeline import Detector, RawRecord

log = get_logger(__name__)


async def warm_up(
    settings: Settings,
    detector: Detector,
    topic: str,
    partition: int,
    before_offset: int,
    first_timestamp_ms: int,
    *,
    after_offset: int | None = None,
) -> int:
    """Evaluate (without publishing) this partition's events in the warm-up span, those after
    `after_offset` only (the engine has the earlier ones); return how many."""
    if before_offset <= 0 or settings.streams_warmup_s <= 0:
        return 0
    started = time.perf_counter()
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{settings.streams_app_id}-warmup",
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        since = first_timestamp_ms - int(settings.streams_warmup_s * 1000)
        found = await consumer.offsets_for_times({tp: max(since, 0)})
        start = found[tp].offset if found.get(tp) is not None else before_offset
        if after_offset is not None:
            start = max(start, after_offset + 1)
        if start >= before_offset:
            return 0
        consumer.seek(tp, start)
        done = 0
        while True:
            fetched = await consumer.getmany(tp, timeout_ms=2000, max_records=5000)
            messages = [m for m in fetched.get(tp, []) if m.offset < before_offset]
            if not messages:
                break
            records = [RawRecord(m.key, m.value, topic, partition, m.offset) for m in messages]
            detector.detect(detector.validate(records), publish=False)
            done += len(records)
            if messages[-1].offset >= before_offset - 1:
                break
        log.info(
            "windows warmed",
            topic=topic,
            partition=partition,
            events=done,
            offsets=f"{start}..{before_offset - 1}",
            seconds=round(time.perf_counter() - started, 2),
        )
        return done
    finally:
        await consumer.stop()
