"""`make demo`: the main job end to end on the embedded defaults, with a summary for people."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from sentinel.settings import Settings


class DemoError(RuntimeError):
    pass


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A detection worker as users start it (`faust -A streams.app worker -l info`), healthy."""
    from streams.process import health, spawn_worker

    proc = spawn_worker(dict(os.environ), log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the worker exited with {proc.returncode}; see {log}")
        answer = health(settings.streams_web_port)
        if answer and answer.get("status") == "ok":
            return proc
        time.sleep(0.5)
    proc.terminate()
    raise DemoError(f"the worker did not become healthy in 120 s; see {log}")


STALL_S = 90.0


def catch_up(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    log: Path,
    tick: Any = None,
    timeout_s: float = 600,
) -> subprocess.Popen[bytes]:
    """Wait until the worker has committed everything; fail early if it stops advancing."""
    from sentinel.kafka import EVENTS, offsets

    progress: dict[str, float] = {"done": -1, "since": time.monotonic()}

    def watch(done: int, total: int) -> None:
        if worker.poll() is not None:
            raise DemoError(f"the worker exited with {worker.returncode}; see {log}")
        if done != progress["done"]:
            progress.update(done=done, since=time.monotonic())
        elif time.monotonic() - progress["since"] > STALL_S:
            raise DemoError(
                f"the worker made no progress for {STALL_S:.0f}s at {done:,} of "
                f"{total:,} events; see {log}"
            )
        if tick is not None:
            tick(done, total)

    if offsets.wait_caught_up(settings, settings.streams_detection_group, EVENTS, timeout_s, watch):
        return worker
    raise DemoError(f"the worker did not catch up in {timeout_s:.0f} s; see {log}")


AGENT_SECONDS = 8.0


def run_agent(settings: Settings, console: Console) -> dict[str, Any]:
    """Run the host agent with the sensors this host can run; show what it published.

    bcc-exec replaces procfs where eBPF works (root and `make agent-deps`); inotify watches a
    folder of its own (not the agent's spool: watching its own writes would feed back).
    """
    from agents.agent import Agent
    from agents.config import load_config
    from agents.sensors import create

    watched = settings.state_dir / "demo-agent"
    watched.mkdir(parents=True, exist_ok=True)
    sensors: dict[str, dict[str, Any]] = {
        "netconn": {},
        "inotify": {"paths": [str(watched)]},
    }
    sensors["bcc-exec" if not create("bcc-exec").check() else "procfs"] = {}
    config = load_config(None, {"sensors": sensors, "stats_interval_s": AGENT_SECONDS})
    agent = Agent(config, settings)
    agent.start()
    # Something for the sensors to see: a few short commands and a file being rewritten.
    probe = watched / "probe.txt"
    for step in range(3):
        subprocess.run(["uname", "-a"], capture_output=True, check=False)
        probe.write_text(f"demo step {step}\n")
        time.sleep(AGENT_SECONDS / 3)
    probe.unlink(missing_ok=True)
    stats = agent.stop()
    table = Table("what", "count", title=f"agent on host {stats['host']}")
    table.add_row("sensors running", ", ".join(sorted(stats["sensors"])))
    for name, why in sorted(stats["unavailable"].items()):
        table.add_row(f"unavailable: {name}", why[:90])
    for key in ("accepted", "produced", "dropped", "invalid"):
        table.add_row(f"events {key}", f"{stats[key]:,}")
    table.add_row("spool pending", f"{stats['spool']['pending']:,}")
    console.print(table)
    if stats["spool"]["pending"] or stats["invalid"]:
        raise DemoError(f"the agent left {stats['spool']['pending']} events unshipped")
    return stats


def run(
    settings: Settings,
    console: Console,
    *,
    count: int,
    seed: int,
    malformed: int,
    keep_running: bool,
    replay: Any,
    lake: Any = None,
    models: Any = None,
) -> None:
    from sentinel.kafka import (
        ALERTS,
        EVENTS,
        EVENTS_DLQ,
        BrokerError,
        EmbeddedBroker,
        ensure_contract_topics,
        offsets,
    )

    broker = EmbeddedBroker(settings, say=lambda line: console.print(line, highlight=False))
    started_here = settings.kafka_embedded and broker.pid() is None
    worker: subprocess.Popen[bytes] | None = None
    console.rule("1. Kafka broker")
    try:
        console.print(broker.start().describe(), highlight=False)
    except BrokerError as exc:
        raise DemoError(str(exc)) from None
    try:
        console.rule("2. contract topics")
        created, present = ensure_contract_topics(settings)
        console.print(f"created: {', '.join(created) or '-'}; already there: {len(present)}")

        console.rule("3. detection worker (faust -A streams.app worker)")
        log = settings.streams_dir / "demo-worker.log"
        worker = start_worker(settings, log)
        console.print(
            f"worker healthy on 127.0.0.1:{settings.streams_web_port}; log: {log}", highlight=False
        )
        # Events left by earlier runs are processed first, so this run's counts are its own.
        worker = catch_up(settings, worker, log)
        before = {t: offsets.end_offsets(settings, t) for t in (EVENTS, EVENTS_DLQ, ALERTS)}

        console.rule(f"4. replay 'mixed': {count:,} events + {malformed} malformed, seed {seed}")
        replay(count, seed, malformed)
        produced = sum(offsets.end_offsets(settings, EVENTS).values()) - sum(
            before[EVENTS].values()
        )

        console.rule("4b. host agent: this machine's own sensors for a few seconds")
        run_agent(settings, console)

        console.rule("5. waiting for the worker to process everything")
        last = [0.0]

        def tick(done: int, total: int) -> None:
            if time.monotonic() - last[0] > 3:
                last[0] = time.monotonic()
                console.print(f"committed {done:,} of {total:,}", highlight=False)

        worker = catch_up(settings, worker, log, tick)

        dead = offsets.read_from(settings, EVENTS_DLQ, before[EVENTS_DLQ])
        alerts: dict[str, dict[str, Any]] = {}
        for record in offsets.read_from(settings, ALERTS, before[ALERTS]):
            alert = orjson.loads(record.value)
            alerts[alert["id"]] = alert
        console.rule("6. summary")
        per_rule: Counter[tuple[str, str]] = Counter()
        folded: Counter[tuple[str, str]] = Counter()
        for alert in alerts.values():
            per_rule[(alert["rule"]["id"], alert["severity"])] += 1
            folded[(alert["rule"]["id"], alert["severity"])] += alert.get("count", 1)
        table = Table("rule", "severity", "alerts", "matches folded in", title="alerts by rule")
        order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
        for (rule, severity), n in sorted(
            per_rule.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])
        ):
            table.add_row(rule, severity, f"{n:,}", f"{folded[(rule, severity)]:,}")
        console.print(table)
        reasons = Counter(dict(r.headers).get("error", b"?").decode()[:60] for r in dead)
        totals = Table("what", "count")
        totals.add_row(f"records produced to {EVENTS}", f"{produced:,}")
        totals.add_row(f"dead letters on {EVENTS_DLQ}", f"{len(dead):,}")
        totals.add_row("valid events (produced - dead letters)", f"{produced - len(dead):,}")
        totals.add_row(f"distinct alerts on {ALERTS}", f"{len(alerts):,}")
        console.print(totals)
        for reason, n in reasons.most_common(5):
            console.print(f"  dead letter: {n} x {reason}", highlight=False, markup=False)
        if len(dead) != malformed:
            raise DemoError(f"expected {malformed} dead letters, found {len(dead)}")
        if lake is not None:
            console.rule("7. the lake: lake_hourly (land bronze, dbt silver and gold, gates)")
            if not lake():
                raise DemoError("lake_hourly failed; see the run in the Dagster UI (make dev)")
        if models is not None:
            console.rule("8. models: models_daily (train, register, promote, drift) in MLflow")
            if not models():
                raise DemoError("models_daily failed; see the run in the Dagster UI (make dev)")
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)
        if started_here and not keep_running:
            broker.stop()
        elif settings.kafka_embedded:
            console.print("the broker keeps running: `make kafka-down` stops it")
