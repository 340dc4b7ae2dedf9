"""Replay throughput into the local broker (generation + encoding + produce + acks, one process)."""

from __future__ import annotations

import argparse
import time
import uuid

from agents.replay import encode, replay_to_kafka
from agents.scenarios import generate
from bench.common import Result, embedded_broker, write_section
from sentinel.kafka import TopicSpec, create_topics
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings

TARGET = 50_000


def run(count: int, settings: Settings) -> list[Result]:
    for event in generate("mixed", 20_000, seed=1):  # warm caches and templates first
        encode(event)
    started = time.perf_counter()
    n = sum(1 for _ in generate("mixed", count, seed=21))
    gen_rate = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for event in generate("mixed", count, seed=21):
        encode(event)
    gen_encode_rate = count / (time.perf_counter() - started)

    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    try:
        create_topics(admin, [TopicSpec(topic, settings.kafka_partitions)])
    finally:
        admin.close()
    summary = replay_to_kafka(generate("mixed", count, seed=21), settings, topic)
    assert summary.errors == 0, summary.first_error
    return [
        Result(
            "replay",
            "scenario generation (mixed)",
            gen_rate,
            "events/s",
            "",
            None,
            "agents.scenarios.generate",
        ),
        Result(
            "replay", "generation + JSON encoding", gen_encode_rate, "events/s", "", None, "orjson"
        ),
        Result(
            "replay",
            "replay to the local broker",
            summary.rate,
            "events/s",
            f">= {TARGET:,}/s",
            summary.rate >= TARGET,
            f"{count:,} events, {settings.kafka_partitions} partitions, acks=all, idempotent",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    settings = Settings()
    with embedded_broker(settings):
        results = run(args.count, settings)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section("replay", f"python -m bench.bench_replay --count {args.count}", results)
    return results


if __name__ == "__main__":
    main()
