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


def start_gateway(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`sentinel gateway serve` as users start it, healthy; its key comes from the environment."""
    import sys
    import urllib.request

    sentinel = Path(sys.executable).parent / "sentinel"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(sentinel), "gateway", "serve"],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the gateway exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{settings.gateway_base_url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise DemoError(f"the gateway did not become healthy in 60 s; see {log}")


TRIAGE_WAIT_S = 120.0


def wait_triaged(
    settings: Settings, alerts: dict[str, dict[str, Any]], since: dict[int, int]
) -> dict[str, dict[str, Any]]:
    """The triage records of this run's alerts at or above the triage severity, once all are in."""
    from sentinel.kafka import ALERTS_TRIAGED, offsets
    from streams.triage.triage import wants_triage

    wanted = {i for i, a in alerts.items() if wants_triage(a, settings.triage_min_severity)}
    deadline = time.monotonic() + TRIAGE_WAIT_S
    triaged: dict[str, dict[str, Any]] = {}
    while True:
        for record in offsets.read_from(settings, ALERTS_TRIAGED, since):
            value = orjson.loads(record.value)
            triaged[value["alert_id"]] = value
        if wanted <= triaged.keys():
            return {i: triaged[i] for i in wanted}
        if time.monotonic() > deadline:
            raise DemoError(
                f"{len(wanted - triaged.keys())} of {len(wanted)} alerts were not triaged "
                f"within {TRIAGE_WAIT_S:.0f} s; see the worker and gateway logs"
            )
        time.sleep(1)


def print_triage(console: Console, triaged: dict[str, dict[str, Any]]) -> None:
    table = Table("status", "verdict", "records", "model", "prompt", title="triage by verdict")
    rows: Counter[tuple[str, str, str, str]] = Counter(
        (
            t.get("status", "triaged"),
            t["verdict"],
            t["model"]["name"],
            f"{t['prompt']['id']} ({t['prompt']['sha256'][:12]})",
        )
        for t in triaged.values()
    )
    for (status, verdict, model, prompt), n in sorted(rows.items()):
        table.add_row(status, verdict, f"{n:,}", model, prompt)
    console.print(table)
    example = next(
        (t for t in triaged.values() if t["verdict"] == "true_positive"),
        next(iter(triaged.values()), None),
    )
    if example is not None:
        console.print(
            f"e.g. {example['rule_id']} on {example['host_id']}: {example['summary']}",
            highlight=False,
            markup=False,
        )


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
    evals: Any = None,
) -> None:
    from sentinel.kafka import (
        ALERTS,
        ALERTS_TRIAGED,
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
    gateway: subprocess.Popen[bytes] | None = None
    console.rule("1. Kafka broker")
    try:
        console.print(broker.start().describe(), highlight=False)
    except BrokerError as exc:
        raise DemoError(str(exc)) from None
    try:
        console.rule("2. contract topics")
        created, present = ensure_contract_topics(settings)
        console.print(f"created: {', '.join(created) or '-'}; already there: {len(present)}")

        if settings.triage_enabled:
            console.rule("3. LLM gateway (sentinel gateway serve)")
            gateway_log = settings.gateway_root / "demo-gateway.log"
            gateway = start_gateway(settings, gateway_log)
            console.print(
                f"gateway healthy at {settings.gateway_base_url}; triage model "
                f"{settings.triage_model}, prompt {settings.triage_prompt}; log: {gateway_log}",
                highlight=False,
            )

        console.rule("3b. detection worker (faust -A streams.app worker)")
        log = settings.streams_dir / "demo-worker.log"
        worker = start_worker(settings, log)
        console.print(
            f"worker healthy on 127.0.0.1:{settings.streams_web_port}; log: {log}", highlight=False
        )
        # Events left by earlier runs are processed first, so this run's counts are its own.
        worker = catch_up(settings, worker, log)
        before = {
            t: offsets.end_offsets(settings, t)
            for t in (EVENTS, EVENTS_DLQ, ALERTS, ALERTS_TRIAGED)
        }

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
        if settings.triage_enabled:
            console.rule(
                f"6b. triage: alerts at or above '{settings.triage_min_severity}' -> "
                f"{ALERTS_TRIAGED}"
            )
            triaged = wait_triaged(settings, alerts, before[ALERTS_TRIAGED])
            print_triage(console, triaged)
            failed = [t for t in triaged.values() if t.get("status") == "failed"]
            if failed:
                raise DemoError(f"{len(failed)} triage records failed: {failed[0].get('error')}")
        if lake is not None:
            console.rule("7. the lake: lake_hourly (land bronze, dbt silver and gold, gates)")
            if not lake():
                raise DemoError("lake_hourly failed; see the run in the Dagster UI (make dev)")
        if models is not None:
            console.rule("8. models: models_daily (train, register, promote, drift) in MLflow")
            if not models():
                raise DemoError("models_daily failed; see the run in the Dagster UI (make dev)")
        if evals is not None and gateway is not None:
            console.rule("9. nightly evaluation: the triage prompts on the golden set (ragas)")
            if not evals():
                raise DemoError("the triage evaluation failed its gate; see the report above")
    finally:
        for child in (worker, gateway):
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait(timeout=60)
        if started_here and not keep_running:
            broker.stop()
        elif settings.kafka_embedded:
            console.print("the broker keeps running: `make kafka-down` stops it")
