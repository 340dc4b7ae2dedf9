"""Agent pipeline benchmark: what stamping, validation, the spool and shipping cost per event.

The agent runs in this process with the `scenario` sensor (generated events of every kind) and
the real pipeline: offer (sample, stamp, validate, encode) -> queue -> spool (fsync interval)
-> shipper -> the embedded broker. Two runs:

- paced at 1k and 5k events/s for a few seconds: the process's CPU time (all threads, the
  generator included) per second, as % of one core, and per event;
- unpaced: the most events per second the pipeline delivers (acknowledged by Kafka).

The generator's own cost is measured alone (no agent) and reported beside, so the agent's share
is the difference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agents.agent import Agent, tune_gc
from agents.config import load_config
from agents.sensors.scenario import ScenarioSensor
from bench.common import Result, embedded_broker, write_section
from sentinel.kafka import ensure_contract_topics
from sentinel.settings import Settings

RATES = (1_000, 5_000)


def cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def generator_cost(count: int) -> float:
    """CPU seconds per event of the scenario sensor alone (unpaced)."""
    sensor = ScenarioSensor({"rate": 10**9, "count": count})
    start = cpu_s()
    for _ in sensor.events():
        pass
    return (cpu_s() - start) / count


def run_agent(settings: Settings, tmp: Path, rate: float, count: int) -> dict[str, Any]:
    host = f"bench-agent-{uuid.uuid4().hex[:8]}"
    config = load_config(
        None,
        {
            "host": {"id": host},
            "rules": {"follow": False},
            "stats_interval_s": 1.0,
            "spool": {"dir": str(tmp / host)},
            # backpressure for every kind: an unpaced sensor would otherwise fill the queue and
            # the drop policy of net and dns would shed events instead of measuring throughput
            "kinds": {k: {"on_full": "block"} for k in ("proc", "file", "net", "dns", "auth")},
        },
    )
    tune_gc()  # as `sentinel agent run` does
    sensor = ScenarioSensor({"rate": rate, "count": count, "seed": 1})
    agent = Agent(config, settings, sensors=[sensor])
    started_cpu, started = cpu_s(), time.perf_counter()
    agent.start()
    deadline = time.monotonic() + 120 + count / rate
    while agent.counters["produced"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {agent.counters['produced']:,} of {count:,} delivered")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    used = cpu_s() - started_cpu
    stats = agent.stop(timeout_s=5)
    return {"elapsed": elapsed, "cpu": used, "stats": stats, "count": count}


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each paced run")
    parser.add_argument("--count", type=int, default=100_000, help="events of the unpaced run")
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    settings = Settings()
    with embedded_broker(settings):
        ensure_contract_topics(settings)
        results = []
        per_event_gen = generator_cost(20_000)
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
            for rate in RATES:
                count = int(rate * args.seconds)
                run = run_agent(settings, Path(tmp), rate, count)
                pct = 100 * run["cpu"] / run["elapsed"]
                agent_us = 1e6 * (run["cpu"] / count - per_event_gen)
                results.append(
                    Result(
                        "agent",
                        f"CPU at {rate:,} events/s (generator included)",
                        pct,
                        "% of a core",
                        note=(
                            f"{agent_us:.0f} us/event for the agent, "
                            f"{per_event_gen * 1e6:.0f} us/event for the generator; "
                            f"spool pending at the end {run['stats']['spool']['pending']}"
                        ),
                    )
                )
            run = run_agent(settings, Path(tmp), 10**9, args.count)
            results.append(
                Result(
                    "agent",
                    "events/s delivered, unpaced (acks=all)",
                    run["count"] / run["elapsed"],
                    "events/s",
                    note=f"{run['count']:,} events, CPU {100 * run['cpu'] / run['elapsed']:.0f}%"
                    " of a core (the generator included)",
                )
            )
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "agent",
            f"python -m bench.bench_agent --seconds {args.seconds:g} --count {args.count}",
            results,
            "One agent in one process (Python threads share the GIL), `scenario` sensor, spool "
            "with `fsync: interval`, the embedded single-node broker on the same 2 cores.",
        )
    return results


if __name__ == "__main__":
    main()
