"""The detection worker on a private broker: sustained throughput, latency at a fixed load, and
a bare aiokafka consume→produce passthrough as the ceiling, all measured in one run.

    python -m bench.bench_stream --count 1000000 --rate 5000 --latency-seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from bench.common import Result, write_section
from sentinel.kafka import (
    ALERTS,
    EVENTS,
    EmbeddedBroker,
    TopicSpec,
    create_topics,
    ensure_contract_topics,
    free_port,
)
from sentinel.kafka import offsets as kafka_offsets
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings
from streams.process import spawn_worker


def _worker(
    settings: Settings, app_id: str, log: Path, reset: str = "earliest"
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        SENTINEL_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SENTINEL_STATE_DIR=str(settings.state_dir),
        SENTINEL_STREAMS_APP_ID=app_id,
        SENTINEL_STREAMS_WEB_PORT=str(free_port()),
        SENTINEL_STREAMS_AUTO_OFFSET_RESET=reset,
        SENTINEL_TRIAGE_ENABLED="false",  # detection throughput alone; bench_gateway has triage's
    )
    return spawn_worker(env, log, loglevel="warn")


def _group(settings: Settings, app_id: str) -> str:
    return settings.model_copy(update={"streams_app_id": app_id}).streams_detection_group


def _committed(settings: Settings, app_id: str) -> int:
    return sum(kafka_offsets.committed(settings, _group(settings, app_id), EVENTS).values())


def sustained(settings: Settings, count: int, log: Path) -> float:
    """Events/s from the worker's first commit until it has committed the whole backlog."""
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    proc = _worker(settings, app_id, log)
    try:
        while _committed(settings, app_id) == 0:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        first, started = _committed(settings, app_id), time.perf_counter()
        while (done := _committed(settings, app_id)) < count:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        return (done - first) / (time.perf_counter() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def latency(settings: Settings, rate: int, seconds: int, log: Path) -> tuple[float, float, int]:
    """p50/p99 ms from event produce to alert produce at a fixed offered load.

    For this phase the events topic stamps records with the broker's append time
    (`message.timestamp.type=LogAppendTime`), so an event's Kafka timestamp is when it was
    produced, whatever the pacing of the replay; a new alert's Kafka timestamp is when the worker
    produced it. The latency is their difference, for the event that raised each new alert.
    """
    _stamp_events_on_append(settings)
    app_id = f"bench-lat-{uuid.uuid4().hex[:6]}"
    start_alerts = kafka_offsets.end_offsets(settings, ALERTS)
    start_events = kafka_offsets.end_offsets(settings, EVENTS)
    proc = _worker(settings, app_id, log, reset="latest")  # only the paced events count
    try:
        time.sleep(20)  # join the group and start fetching at the end

        def paced() -> Iterator[dict[str, Any]]:
            # Lazy, so that event time starts when the replay sends its first event (after its
            # producer has connected), not when the generator is created.
            yield from generate(
                "mixed", rate * seconds, seed=43, start=datetime.now(UTC), events_per_second=rate
            )

        replay_to_kafka(paced(), settings, EVENTS, rate=rate)
        kafka_offsets.wait_caught_up(settings, _group(settings, app_id), EVENTS, 600)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    appended = {
        orjson.loads(r.value)["id"]: r.timestamp
        for r in kafka_offsets.read_from(settings, EVENTS, start_events)
    }
    samples = []
    for record in kafka_offsets.read_from(settings, ALERTS, start_alerts):
        alert = orjson.loads(record.value)
        produced = appended.get(alert["event_ids"][0])
        if alert.get("count", 1) == 1 and produced is not None:
            samples.append(record.timestamp - produced)
    if len(samples) < 2:
        return float("nan"), float("nan"), len(samples)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98], len(samples)


def _stamp_events_on_append(settings: Settings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = admin_client(settings)
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    EVENTS,
                    configs={"message.timestamp.type": "LogAppendTime"},
                )
            ]
        )
    finally:
        admin.close()


async def _passthrough(settings: Settings, count: int) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    sink = f"bench.passthrough.{uuid.uuid4().hex[:6]}"
    admin = admin_client(settings)
    try:
        create_topics(admin, [TopicSpec(sink, settings.kafka_partitions)])
    finally:
        admin.close()
    consumer = AIOKafkaConsumer(
        EVENTS,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-pass-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await consumer.start()
    await producer.start()
    done, started = 0, 0.0
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not started:
                started = time.perf_counter()
            futures = [
                await producer.send(sink, m.value, key=m.key)
                for msgs in batches.values()
                for m in msgs
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        return done / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def run(count: int, rate: int, latency_seconds: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        base = Settings()
        settings = Settings(
            state_dir=Path(tmp) / "state",
            cache_dir=base.cache_dir,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            kafka_heap="1g",
        )
        broker = EmbeddedBroker(settings, say=print)
        broker.start()
        try:
            ensure_contract_topics(settings)
            log = Path(tmp) / "worker.log"
            summary = replay_to_kafka(generate("mixed", count, seed=41), settings, EVENTS)
            assert summary.errors == 0, summary.first_error
            rate_sustained = sustained(settings, count, log)
            ceiling = asyncio.run(_passthrough(settings, count))
            p50, p99, n = latency(settings, rate, latency_seconds, log)
        finally:
            broker.stop()
    share = rate_sustained / ceiling
    return [
        Result(
            "stream",
            "sustained, broker → worker → alerts",
            rate_sustained,
            "events/s",
            ">= 20,000/s",
            rate_sustained >= 20_000,
            f"{count:,} mixed events, core pack, 1 worker",
        ),
        Result(
            "stream",
            "aiokafka consume→produce passthrough",
            ceiling,
            "events/s",
            "",
            None,
            "the ceiling, same broker, same events",
        ),
        Result("stream", "worker / passthrough", share * 100, "%", ">= 50%", share >= 0.5, ""),
        Result(
            "stream",
            f"produce→alert latency p50 at {rate:,}/s",
            p50,
            "ms",
            "",
            None,
            f"{n} new alerts",
        ),
        Result(
            "stream",
            f"produce→alert latency p99 at {rate:,}/s",
            p99,
            "ms",
            "<= 250 ms",
            p99 <= 250,
            f"{latency_seconds} s of offered load",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--latency-seconds", type=int, default=60)
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    results = run(args.count, args.rate, args.latency_seconds)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "stream",
            f"python -m bench.bench_stream --count {args.count} --rate "
            f"{args.rate} --latency-seconds {args.latency_seconds}",
            results,
        )
    return results


if __name__ == "__main__":
    main()
