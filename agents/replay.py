"""Replay generated (or recorded) events into `sentinel.events.v1`, or into a JSON Lines file.

Used by `sentinel replay`, by tests and by benchmarks: events are dicts (encoded here) or raw
bytes (sent untouched, e.g. malformed records for dead-letter tests).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from sentinel.kafka.clients import async_producer
from sentinel.settings import Settings
from sentinel.tracing import SpanKind, flush, traceparent_of, tracer

Record = dict[str, Any] | bytes
Progress = Callable[[int], None]

_trace_rng = random.Random()


@dataclass
class ReplaySummary:
    """What a replay did: counts, bytes, wall time, and the first delivery error if any."""

    target: str
    sent: int = 0
    errors: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    first_error: str | None = None
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        text = (
            f"sent {self.sent:,} events to {self.target} in {self.elapsed_s:.2f}s "
            f"({self.rate:,.0f} events/s, {self.bytes / 1e6:.1f} MB), errors: {self.errors}"
        )
        if self.first_error:
            text += f"\nfirst error: {self.first_error}"
        return text


def traceparent() -> bytes:
    """A fresh W3C trace context (version 00, sampled), for records sent while tracing is off."""
    hexed = _trace_rng.randbytes(24).hex()
    return f"00-{hexed[:32]}-{hexed[32:]}-01".encode()


_second_cache: dict[str, int] = {}


def timestamp_ms(record: Record) -> int | None:
    """The event time in epoch milliseconds, used as the Kafka record timestamp (None for raw)."""
    if isinstance(record, bytes):
        return None
    ts = record.get("ts")
    if not isinstance(ts, str) or len(ts) < 20:
        return None
    second = _second_cache.get(ts[:19])
    if second is None:
        try:
            second = int(datetime.fromisoformat(ts[:19] + "+00:00").timestamp())
        except ValueError:
            return None
        if len(_second_cache) > 100_000:
            _second_cache.clear()
        _second_cache[ts[:19]] = second
    fraction = ts[20:23] if ts[19] == "." else ""
    return second * 1000 + (int(fraction.ljust(3, "0")) if fraction.isdigit() else 0)


def encode(record: Record) -> tuple[bytes | None, bytes, str]:
    """(key, value, kind) for a record: key = host id, value = compact JSON, bytes untouched."""
    if isinstance(record, bytes):
        return None, record, "raw"
    host = record.get("host")
    host_id = host.get("id") if isinstance(host, dict) else None
    key = host_id.encode() if isinstance(host_id, str) else None
    return key, orjson.dumps(record), str(record.get("kind", "?"))


def replay_to_kafka(
    records: Iterable[Record],
    settings: Settings,
    topic: str,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Produce every record to `topic` (key = host id, header `traceparent`) and wait for acks.

    Records are packed into per-partition batches (aiokafka's batch API, the same murmur2
    partitioner as the Java client), which is several times faster than one send per record.
    Each batch is one `replay.batch` span, whose context is every record's `traceparent`.
    """
    return asyncio.run(_replay(records, settings, topic, rate, progress))


async def _replay(
    records: Iterable[Record],
    settings: Settings,
    topic: str,
    rate: float | None,
    progress: Progress | None,
) -> ReplaySummary:
    from aiokafka.partitioner import DefaultPartitioner

    summary = ReplaySummary(target=topic)
    spans = tracer(settings, "sentinel-replay")
    producer = async_producer(settings)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        partition_of: dict[bytes, int] = {}  # murmur2 in pure Python: once per key, not per record
        open_batches: dict[int, tuple[Any, int]] = {}  # partition -> (batch, records in it)
        batch_spans: dict[int, tuple[Any, list[tuple[str, bytes]] | None]] = {}
        in_flight: list[tuple[asyncio.Future[Any], int]] = []

        def open_batch(partition: int) -> tuple[Any, int]:
            span = spans.start_span(
                "replay.batch",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": partition,
                },
            )
            header = traceparent_of(span)
            batch_spans[partition] = (span, [("traceparent", header.encode())] if header else None)
            return producer.create_batch(), 0

        async def ship(partition: int) -> None:
            batch, count = open_batches.pop(partition)
            span, _ = batch_spans.pop(partition)
            span.set_attribute("messaging.batch.message_count", count)
            delivered = await producer.send_batch(batch, topic, partition=partition)
            delivered.add_done_callback(lambda _: span.end())
            in_flight.append((delivered, count))

        # Paced replays flush often so that latency stays low; bulk replays fill batches.
        check_every = 100 if rate else 1000
        last_flush = started = time.perf_counter()
        for record in records:
            key, value, kind = encode(record)
            if key is None:
                partition = partitions[summary.sent % len(partitions)]
            else:
                partition = partition_of.get(key, -1)
                if partition < 0:
                    partition = partition_of[key] = partitioner(key, partitions, partitions)
            # Kafka timestamp = event time, so consumers can seek by event time.
            stamp = timestamp_ms(record)
            entry = open_batches.get(partition)
            if entry is None:
                entry = open_batches[partition] = open_batch(partition)
            headers = batch_spans[partition][1] or [("traceparent", traceparent())]
            if entry[0].append(key=key, value=value, timestamp=stamp, headers=headers) is None:
                await ship(partition)  # full: send it and start the next one
                entry = open_batches[partition] = open_batch(partition)
                headers = batch_spans[partition][1] or [("traceparent", traceparent())]
                if entry[0].append(key=key, value=value, timestamp=stamp, headers=headers) is None:
                    summary.errors += 1
                    summary.first_error = (
                        summary.first_error or f"record of {len(value)} bytes too large"
                    )
                    continue
            open_batches[partition] = (entry[0], entry[1] + 1)
            summary.sent += 1
            summary.bytes += len(value)
            summary.by_kind[kind] = summary.by_kind.get(kind, 0) + 1
            if summary.sent % check_every == 0:
                now = time.perf_counter()
                if rate:
                    ahead = summary.sent / rate - (now - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if rate or now - last_flush > 0.05:
                    for partition_id in list(open_batches):
                        await ship(partition_id)
                    last_flush = now
                    await _settle(in_flight, summary, wait=False)
                if progress and summary.sent % 1000 == 0:
                    progress(summary.sent)
        for partition_id in list(open_batches):
            await ship(partition_id)
        await _settle(in_flight, summary, wait=True)
        summary.elapsed_s = time.perf_counter() - started
    finally:
        await producer.stop()
        flush()  # the spans of this replay are in their file when it returns
    if progress:
        progress(summary.sent)
    return summary


async def _settle(
    in_flight: list[tuple[asyncio.Future[Any], int]], summary: ReplaySummary, *, wait: bool
) -> None:
    """Collect finished batch deliveries; a failed batch counts all its records as errors."""
    if wait and in_flight:
        await asyncio.wait([f for f, _ in in_flight])
    still: list[tuple[asyncio.Future[Any], int]] = []
    for future, count in in_flight:
        if not future.done():
            still.append((future, count))
        elif future.exception() is not None:
            summary.errors += count
            summary.sent -= count
            summary.first_error = summary.first_error or repr(future.exception())
    in_flight[:] = still


def write_jsonl(
    records: Iterable[Record], path: Path, *, progress: Progress | None = None
) -> ReplaySummary:
    """Write one record per line (dicts as compact JSON, bytes as they are) to `path`."""
    summary = ReplaySummary(target=str(path))
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb", buffering=1 << 20) as out:
        for record in records:
            _, value, kind = encode(record)
            out.write(value.replace(b"\n", b" ") + b"\n")
            summary.sent += 1
            summary.bytes += len(value) + 1
            summary.by_kind[kind] = summary.by_kind.get(kind, 0) + 1
            if progress and summary.sent % 1000 == 0:
                progress(summary.sent)
    summary.elapsed_s = time.perf_counter() - started
    if progress:
        progress(summary.sent)
    return summary
