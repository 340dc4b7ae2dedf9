"""Online scoring benchmark: events/s through a worker's scoring path, feature fetch included.

Builds a trained state the way production does (mixed replay → `lake_hourly` → `models_daily` on
a private lake, Feast state and MLflow store), then feeds scenario events through what a worker
does per scoring round: count them into live windows, push the touched windows to Feast's push
source, fetch the touched hosts' online features (one call), score them (one call) and build the
alerts. One round per batch of `--batch` events: the worker's default is one round per second,
whatever the rate, so this is the cost per event at the worst case of one round per batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from bench.common import Result, embedded_broker, write_section
from orchestration.definitions import build
from orchestration.lib.resources import build_resources
from sentinel.kafka import TopicSpec, create_topics
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings
from streams.scoring.scorer import Scorer
from streams.scoring.windows import LiveWindows

TARGET = 10_000
TRAIN_EVENTS = 40_000
TRAIN_EPS = 8.0


def trained_state(settings: Settings, root: Path, hosts: int) -> Settings:
    """A lake, Feast state and MLflow store with a champion, built by the real jobs."""
    run = settings.model_copy(
        update={
            "state_dir": root / "state",
            "lake_consumer_group": f"bench-ml-{uuid.uuid4().hex[:8]}",
            "lake_automation": False,
        }
    )
    topics = {t: f"bench.ml.{t}.{uuid.uuid4().hex[:8]}" for t in ("events", "alerts", "dlq")}
    admin = admin_client(settings)
    try:
        create_topics(admin, [TopicSpec(t, 3) for t in topics.values()])
    finally:
        admin.close()
    start = datetime.fromtimestamp(time.time() - TRAIN_EVENTS / TRAIN_EPS - 600, UTC)
    events = generate(
        "mixed", TRAIN_EVENTS, seed=3, start=start, hosts=hosts, events_per_second=TRAIN_EPS
    )
    replay_to_kafka(events, run, topics["events"])
    definitions = build(run, build_resources(run, topics))
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        for job in ("lake_hourly", "models_daily"):
            began = time.perf_counter()
            result = definitions.resolve_job_def(job).execute_in_process(instance=instance)
            print(f"  {job}: {time.perf_counter() - began:.0f}s", flush=True)
            assert result.success, job
    return run


def measure(
    settings: Settings, count: int, batch: int, hosts: int
) -> tuple[float, dict[str, float]]:
    scorer = Scorer(settings)
    scorer.refresh()
    assert scorer.champion is not None, "no champion was promoted"
    live = LiveWindows()
    events = list(generate("mixed", count, seed=9, start=datetime.now(UTC), hosts=hosts))
    parts = {"observe": 0.0, "score": 0.0}
    scored = alerts = 0
    began = time.perf_counter()
    for i in range(0, len(events), batch):
        t0 = time.perf_counter()
        live.observe(events[i : i + batch])
        t1 = time.perf_counter()
        done = scorer.score(live.take_dirty())
        parts["observe"] += t1 - t0
        parts["score"] += time.perf_counter() - t1
        scored += len(done.scores)
        alerts += len(done.alerts)
    elapsed = time.perf_counter() - began
    rounds = -(-len(events) // batch)
    print(
        f"  {len(events):,} events, {hosts} hosts, batches of {batch}: {len(events) / elapsed:,.0f}"
        f" events/s; {rounds} rounds, {scored:,} host scores, {alerts} alerts; "
        f"observe {parts['observe']:.2f}s, push+fetch+score {parts['score']:.2f}s",
        flush=True,
    )
    return len(events) / elapsed, {k: v * 1e3 / rounds for k, v in parts.items()}


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000, help="events scored per fleet")
    parser.add_argument("--batch", type=int, default=1000, help="events per scoring round")
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    settings = Settings()
    with embedded_broker(settings):
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
            trained = trained_state(settings, Path(tmp), hosts=200)
            for hosts in (20, 200):
                rate, per_round = measure(trained, args.count, args.batch, hosts)
                results.append(
                    Result(
                        "scoring",
                        f"events/s, {hosts} hosts, rounds of {args.batch}",
                        rate,
                        "events/s",
                        f">= {TARGET:,}",
                        rate >= TARGET,
                        f"per round: {per_round['score']:.1f} ms push+fetch+score, "
                        f"{per_round['observe']:.1f} ms counting",
                    )
                )
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "scoring",
            f"python -m bench.bench_scoring --count {args.count} --batch {args.batch}",
            results,
            "One process, the champion of a fresh `models_daily` (14 features, 200 trees); "
            "Feast's SQLite online store on local disk.",
        )
    return results


if __name__ == "__main__":
    main()
