"""The chaos drill (`sentinel chaos run`, `make chaos`): the whole loopback stack under a steady
mixed load while faults are injected, then a reconciliation of everything produced.

The stack is the real one, each part started as users start it: a private Kafka broker (its own
ports and data), host agents (`sentinel agent run` with the `scenario` sensor: a mixed replay
paced in real time, through the disk spool), one detection worker (`faust -A streams.app worker`)
with triage on, the LLM gateway (`sentinel gateway serve`) whose upstream model server is a second
gateway behind a fault proxy, and the lake's landing (`orchestration.lib.landing.land`, what the
`bronze_events` asset runs). Faults, in order: SIGKILL the worker (and start a new one), restart
the broker, cut the first agent's network path to the broker, slow the gateway's upstream.

The reconciliation compares what the agents say they produced with the topics, the worker's
commits, the dead letters, an undisturbed run of the same events (the worker's own pipeline
in-process, `streams.runtime.Runtime`), the triage records and the lake's bronze files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from sentinel.chaos.faults import FaultProxy
from sentinel.settings import PROJECT_ROOT, Settings
from streams.process import health, spawn_worker

Say = Callable[[str], None]


# Replayed while the upstream is slow, ATTACK_EVENTS events each (about 7 alerts to triage).
SLOW_ATTACKS = ("reverse-shell", "curl-pipe-shell", "cred-access")
ATTACK_EVENTS = 200


class DrillError(RuntimeError):
    """The drill could not run (a component did not start or never caught up)."""


@dataclass(frozen=True)
class DrillPlan:
    """How long, how fast and how hard. Faults happen at fixed fractions of `seconds`."""

    seconds: float = 180.0  # how long the agents produce
    rate: float = 250.0  # events per second, per agent
    agents: int = 2  # the first one's path to the broker is cut
    malformed: int = 100  # records that break the contract, injected twice
    cut_s: float = 30.0  # the agent's path stays down this long
    slow_s: float = 30.0  # the upstream model server is slow this long
    latency_s: float = 2.0  # added to every response of the upstream meanwhile
    seed: int = 7
    cut_mode: Literal["reset", "blackhole"] = "reset"  # refused path, or a silent partition
    settle_timeout_s: float = 300.0  # after production: every component must catch up by then

    KILL_AT = 0.15
    RESTART_AT = 0.35
    LAND_AT = 0.50
    CUT_AT = 0.55
    SLOW_AT = 0.80

    def check(self) -> None:
        if self.seconds < 40:
            raise ValueError("seconds must be at least 40 (four faults need room)")
        if self.rate <= 0 or self.agents < 1 or self.malformed < 0:
            raise ValueError("rate must be > 0, agents >= 1 and malformed >= 0")
        if self.cut_s <= 0 or self.CUT_AT * self.seconds + self.cut_s > self.SLOW_AT * self.seconds:
            raise ValueError(
                f"cut_s must be > 0 and end before the slow-down at {self.SLOW_AT * self.seconds:.0f}"
                f" s: at most {(self.SLOW_AT - self.CUT_AT) * self.seconds:.0f} s for "
                f"{self.seconds:.0f} s"
            )
        if self.slow_s <= 0 or self.SLOW_AT * self.seconds + self.slow_s > self.seconds:
            raise ValueError(
                f"slow_s must be > 0 and end with production: at most "
                f"{(1 - self.SLOW_AT) * self.seconds:.0f} s for {self.seconds:.0f} s"
            )

    @property
    def events_per_agent(self) -> int:
        return int(self.rate * self.seconds)


@dataclass
class FaultRecord:
    fault: str
    at_s: float  # since production started
    down_s: float | None = None  # how long the part was away (or slowed)
    recovered_s: float | None = None  # after the fault ended, until the stack caught up again
    detail: str = ""


@dataclass
class Check:
    name: str
    expected: int
    observed: int
    lost: int
    duplicated: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.expected == self.observed


@dataclass
class DrillReport:
    plan: DrillPlan
    root: Path
    started: str
    faults: list[FaultRecord] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    commit: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.checks)

    @property
    def duplicated(self) -> int:
        return sum(c.duplicated for c in self.checks)


# -- child processes ---------------------------------------------------------------------------
class Child:
    """One process of the stack, started with its own environment, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def adopt(cls, name: str, proc: subprocess.Popen[bytes], log: Path) -> Child:
        """A process something else started (e.g. `streams.process.spawn_worker`)."""
        child = cls(name, [str(a) for a in proc.args], {}, log)  # type: ignore[union-attr]
        child.proc = proc
        return child

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise DrillError(
                f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n"
                + "\n".join(tail)
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _get_json(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return dict(orjson.loads(response.read()))
    except (OSError, ValueError):
        return None


def _answers(url: str) -> bool:
    return _get_json(url) is not None


def _started(agent: Child) -> bool:
    """`sentinel agent run` logs "agent started" once its sensors run."""
    return agent.log.is_file() and b'"agent started"' in agent.log.read_bytes()


def _wait(what: str, predicate: Callable[[], bool], timeout_s: float, *children: Child) -> float:
    """Poll `predicate` until true; the seconds it took. Children must stay alive meanwhile."""
    started = time.monotonic()
    while not predicate():
        for child in children:
            child.check()
        if time.monotonic() - started > timeout_s:
            raise DrillError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - started


# -- the drill ---------------------------------------------------------------------------------
class Drill:
    def __init__(self, plan: DrillPlan, root: Path, say: Say = print) -> None:
        from sentinel.kafka import free_port
        from sentinel.settings import get_settings

        plan.check()
        self.plan = plan
        self.root = root
        self.say_raw = say
        self.t0 = time.monotonic()
        self.produce_t0: float | None = None
        base = get_settings()
        self.settings = Settings(
            state_dir=root / "state",
            cache_dir=base.cache_dir,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            kafka_heap="512m",
            streams_app_id=f"chaos-{uuid.uuid4().hex[:8]}",
            streams_web_port=free_port(),
            gateway_port=free_port(),
        )
        self.client_key = f"sk-sentinel-{secrets.token_hex(16)}"
        self.upstream_key = f"sk-sentinel-{secrets.token_hex(16)}"
        self.agent_listener = free_port()
        self.agent_proxy = FaultProxy(self.agent_listener, port=free_port(), name="agent-path")
        self.upstream_port = free_port()
        self.upstream_proxy = FaultProxy(self.upstream_port, port=free_port(), name="upstream")
        self.hosts = [f"chaos-host-{i + 1}" for i in range(plan.agents)]
        self.broker: Any = None
        self.upstream: Child | None = None
        self.gateway: Child | None = None
        self.workers: list[Child] = []
        self.agents: dict[str, Child] = {}
        self.faults: list[FaultRecord] = []
        self.samples: list[dict[str, Any]] = []
        self.injected: list[int] = []
        self.injected_attacks = 0
        self._monitor_stop = threading.Event()
        self._lag: tuple[float, dict[str, Any]] = (0.0, {})  # (read at, lag per group)
        self._probes: list[tuple[FaultRecord, float, Callable[[dict[str, Any]], bool]]] = []
        self._probe_lock = threading.Lock()

    # -- output ---------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - (self.produce_t0 if self.produce_t0 is not None else self.t0)

    def say(self, message: str) -> None:
        self.say_raw(f"[{self.now():6.1f}s] {message}")

    # -- environment of the children --------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SENTINEL_") or k in ("SENTINEL_OTEL_EXPORTER",)
        }
        env.update(
            SENTINEL_STATE_DIR=str(s.state_dir),
            SENTINEL_CACHE_DIR=str(s.cache_dir),
            SENTINEL_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
            SENTINEL_KAFKA_EXTERNAL="true",
            SENTINEL_STREAMS_APP_ID=s.streams_app_id,
            SENTINEL_STREAMS_WEB_PORT=str(s.streams_web_port),
            SENTINEL_GATEWAY_PORT=str(s.gateway_port),
            SENTINEL_GATEWAY_URL=f"http://127.0.0.1:{s.gateway_port}",
            SENTINEL_GATEWAY_API_KEY=self.client_key,
            SENTINEL_TRIAGE_ENABLED="true",
            SENTINEL_LOG_FORMAT="json",
        )
        env.update(extra)
        return env

    @property
    def bin(self) -> Path:
        return Path(sys.executable).parent

    # -- start ----------------------------------------------------------------------------------
    def setup(self) -> None:
        from sentinel.kafka import EmbeddedBroker, ensure_contract_topics

        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "plan.json").write_bytes(
            orjson.dumps(self.plan.__dict__, option=orjson.OPT_INDENT_2)
        )
        self.say(f"drill folder {self.root}")
        self.agent_proxy.start()
        self.upstream_proxy.start()
        self.broker = EmbeddedBroker(
            self.settings,
            say=lambda line: self.say(f"broker: {line}"),
            listeners={"AGENTS": (self.agent_listener, self.agent_proxy.port)},
        )
        self.broker.start()
        ensure_contract_topics(self.settings)
        self.say(
            f"broker at {self.settings.kafka_bootstrap}; agents reach it through the "
            f"{self.agent_proxy.name} proxy at {self.agent_proxy.address}"
        )
        self._start_gateways()
        self.start_worker()
        for i, host in enumerate(self.hosts):
            self.agents[host] = self._start_agent(host, via_proxy=i == 0)

    def _start_gateways(self) -> None:
        upstream_state = self.root / "model-server"
        self.upstream = Child(
            "model server (a gateway serving extractive-triage)",
            [str(self.bin / "sentinel"), "gateway", "serve", "--port", str(self.upstream_port)],
            self.env(
                SENTINEL_STATE_DIR=str(upstream_state),
                SENTINEL_GATEWAY_API_KEY=self.upstream_key,
            ),
            self.root / "logs" / "model-server.log",
        ).start()
        config = {
            "upstreams": [
                {
                    "name": "model-server",
                    "kind": "openai",
                    "base_url": f"http://{self.upstream_proxy.address}/v1",
                    "api_key_env": "SENTINEL_CHAOS_UPSTREAM_KEY",
                    "timeout_s": 30,
                    "connect_timeout_s": 2,
                    "max_retries": 2,
                    "backoff_s": 0.5,
                }
            ],
            "models": {
                "extractive-triage": {
                    "description": "the model server behind the upstream fault proxy",
                    "targets": [{"upstream": "model-server", "model": "extractive-triage"}],
                }
            },
        }
        config_path = self.root / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.gateway = Child(
            "gateway",
            [str(self.bin / "sentinel"), "gateway", "serve", "--config", str(config_path)],
            self.env(SENTINEL_CHAOS_UPSTREAM_KEY=self.upstream_key),
            self.root / "logs" / "gateway.log",
        ).start()
        for child, port in ((self.upstream, self.upstream_port), (self.gateway, None)):
            url = f"http://127.0.0.1:{port or self.settings.gateway_port}/health"
            _wait(f"{child.name} healthy", functools.partial(_answers, url), 60, child)
        self.say(
            f"gateway at 127.0.0.1:{self.settings.gateway_port}; its upstream model server at "
            f"127.0.0.1:{self.upstream_port} through the {self.upstream_proxy.name} proxy"
        )

    def start_worker(self) -> Child:
        n = len(self.workers) + 1
        log = self.root / "logs" / f"worker-{n}.log"
        worker = Child.adopt(f"worker {n}", spawn_worker(self.env(), log), log)
        self.workers.append(worker)
        _wait(f"worker {n} healthy", self.worker_healthy, 120, worker)
        return worker

    def worker_healthy(self) -> bool:
        answer = health(self.settings.streams_web_port)
        return bool(answer and answer.get("status") == "ok")

    @property
    def worker(self) -> Child:
        return self.workers[-1]

    def agent_state(self, host: str) -> Path:
        return self.root / "agents" / host

    def _start_agent(self, host: str, *, via_proxy: bool) -> Child:
        state = self.agent_state(host)
        state.mkdir(parents=True, exist_ok=True)
        config = {
            "host": {"id": host},
            "stats_interval_s": 0.5,
            "rules": {"follow": False},
            "sensors": {
                "scenario": {
                    "scenario": "mixed",
                    "rate": self.plan.rate,
                    "count": self.plan.events_per_agent,
                    "seed": self.plan.seed + len(self.agents),
                    "hosts": 1,
                }
            },
        }
        path = state / "agent.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        bootstrap = self.agent_proxy.address if via_proxy else self.settings.kafka_bootstrap
        return Child(
            f"agent {host}",
            [str(self.bin / "sentinel"), "agent", "run", "-c", str(path)],
            self.env(SENTINEL_STATE_DIR=str(state), SENTINEL_KAFKA_BOOTSTRAP=bootstrap),
            self.root / "logs" / f"agent-{host}.log",
        )

    def agent_stats(self, host: str) -> dict[str, Any]:
        path = self.agent_state(host) / "agent" / host / "stats.json"
        try:
            return dict(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return {}

    # -- the monitor: samples every second and times recoveries ------------------------------------
    def _lags(self) -> None:
        """Consumer lags, read in a thread of their own: a Kafka client blocks while the broker
        is away, and the samples of the agents' spools must go on meanwhile."""
        from kafka import KafkaConsumer, TopicPartition

        from sentinel.kafka import ALERTS, EVENTS

        s = self.settings
        groups = {
            "detection_lag": (s.streams_detection_group, EVENTS),
            "triage_lag": (f"{s.streams_app_id}.triage", ALERTS),
        }
        # One consumer per group that never joins it: `committed()` reads the group's offsets.
        clients: dict[str, Any] = {}
        while not self._monitor_stop.wait(1.0):
            try:
                lags: dict[str, Any] = {}
                for name, (group, topic) in groups.items():
                    if name not in clients:
                        clients[name] = KafkaConsumer(
                            bootstrap_servers=s.kafka_bootstrap,
                            group_id=group,
                            enable_auto_commit=False,
                        )
                    consumer = clients[name]
                    parts = consumer.partitions_for_topic(topic) or ()
                    tps = [TopicPartition(topic, p) for p in parts]
                    end = consumer.end_offsets(tps)
                    lags[name] = sum(end[tp] - (consumer.committed(tp) or 0) for tp in tps)
                self._lag = (time.monotonic(), lags)
            except Exception:  # the broker may be down: that is the point
                for client in clients.values():
                    with contextlib.suppress(Exception):
                        client.close()
                clients.clear()
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()

    def _monitor(self) -> None:
        lags = threading.Thread(target=self._lags, name="drill-lags", daemon=True)
        lags.start()
        while not self._monitor_stop.wait(1.0):
            sample: dict[str, Any] = {"t": round(self.now(), 1)}
            read_at, lag = self._lag
            fresh = time.monotonic() - read_at < 3.0  # else unknown: the broker is away
            for name in ("detection_lag", "triage_lag"):
                sample[name] = lag.get(name) if fresh else None
            for host in self.hosts:
                stats = self.agent_stats(host)
                sample[f"spool:{host}"] = stats.get("spool", {}).get("pending")
                sample[f"produced:{host}"] = stats.get("produced")
            sample["worker_up"] = self.worker_healthy()
            self.samples.append(sample)
            with self._probe_lock:
                for probe in list(self._probes):
                    record, since, ready = probe
                    if ready(sample):
                        record.recovered_s = round(time.monotonic() - since, 1)
                        self._probes.remove(probe)
                        self.say(f"{record.fault}: recovered after {record.recovered_s:.1f} s")
        lags.join(10)

    def probe(self, record: FaultRecord, ready: Callable[[dict[str, Any]], bool]) -> None:
        """Time from now until a sample satisfies `ready`: the fault's recovery."""
        with self._probe_lock:
            self._probes.append((record, time.monotonic(), ready))

    def steady(self, sample: dict[str, Any]) -> bool:
        """Caught up: detection lag within a second of production and every spool near empty."""
        per_second = self.plan.rate * self.plan.agents
        lag = sample.get("detection_lag")
        spools = [sample.get(f"spool:{h}") for h in self.hosts]
        return (
            bool(sample.get("worker_up"))
            and lag is not None
            and lag <= max(per_second, 500)
            and all(p is not None and p <= self.plan.rate for p in spools)
        )

    # -- faults ---------------------------------------------------------------------------------
    def kill_worker(self) -> None:
        from sentinel.kafka import EVENTS, offsets

        done = sum(
            offsets.committed(self.settings, self.settings.streams_detection_group, EVENTS).values()
        )
        old = self.worker
        record = FaultRecord("SIGKILL the detection worker", self.now())
        self.faults.append(record)
        old.kill(signal.SIGKILL)
        assert old.proc is not None
        old.proc.wait(30)
        self.say(
            f"SIGKILLed {old.name} (pid {old.pid}) at {done:,} committed events; starting another"
        )
        started = time.monotonic()
        self.start_worker()
        record.down_s = round(time.monotonic() - started, 1)
        record.detail = f"killed at {done:,} committed events; a new worker took over"
        self.probe(record, self.steady)

    def restart_broker(self) -> None:
        record = FaultRecord("restart the broker", self.now())
        self.faults.append(record)
        started = time.monotonic()
        first = len(self.samples)
        self.broker.stop(timeout_s=30)
        stopped = time.monotonic() - started
        self.broker.start()
        record.down_s = round(time.monotonic() - started, 1)
        peak = max(
            (s.get(f"spool:{h}") or 0 for s in self.samples[first:] for h in self.hosts),
            default=0,
        )
        record.detail = (
            f"stopped (SIGTERM) in {stopped:.1f} s, back in {record.down_s:.1f} s; "
            f"{peak:,} events waited in an agent's spool at the peak"
        )
        self.say(f"broker back after {record.down_s:.1f} s")
        self.probe(record, self.steady)

    def cut_agent(self) -> None:
        host = self.hosts[0]
        record = FaultRecord(f"cut {host}'s path to the broker", self.now())
        self.faults.append(record)
        self.agent_proxy.cut(self.plan.cut_mode)
        self.say(
            f"cut {host}'s network path to the broker for {self.plan.cut_s:.0f} s "
            f"({self.plan.cut_mode})"
        )
        peak = 0
        deadline = time.monotonic() + self.plan.cut_s
        while time.monotonic() < deadline:
            peak = max(peak, int(self.agent_stats(host).get("spool", {}).get("pending") or 0))
            time.sleep(0.5)
        self.agent_proxy.restore()
        record.down_s = self.plan.cut_s
        what = "reset" if self.plan.cut_mode == "reset" else "held without an answer"
        count = self.agent_proxy.stats["reset" if self.plan.cut_mode == "reset" else "held"]
        record.detail = f"{peak:,} events waited in its spool; {count} connections {what}"
        self.say(f"restored {host}'s path ({peak:,} events spooled at the peak)")
        self.probe(record, self.steady)

    def slow_upstream(self) -> None:
        record = FaultRecord("slow the gateway's upstream", self.now())
        self.faults.append(record)
        self.upstream_proxy.slow(self.plan.latency_s)
        self.say(f"upstream model server slowed by {self.plan.latency_s:.1f} s a response")
        started = time.monotonic()
        self.inject_attacks()  # alerts that want triage while the upstream is slow
        time.sleep(max(0.0, self.plan.slow_s - (time.monotonic() - started)))
        self.upstream_proxy.slow(0.0)
        record.down_s = self.plan.slow_s
        backlog = max((s.get("triage_lag") or 0) for s in self.samples[-int(self.plan.slow_s) :])
        record.detail = (
            f"+{self.plan.latency_s:.1f} s a response for {self.plan.slow_s:.0f} s; "
            f"triage backlog peaked at {backlog:,} alerts"
        )
        self.say("upstream model server at full speed again")
        self.probe(record, lambda sample: sample.get("triage_lag") == 0)

    def inject_attacks(self) -> None:
        """Replay a few attack episodes of other hosts now: high-severity alerts to triage."""
        from datetime import UTC, datetime

        from agents.replay import replay_to_kafka
        from agents.scenarios import generate
        from sentinel.kafka import EVENTS

        events = [
            event
            for i, scenario in enumerate(SLOW_ATTACKS)
            for event in generate(
                scenario, ATTACK_EVENTS, hosts=4, seed=self.plan.seed + i, start=datetime.now(UTC)
            )
        ]
        summary = replay_to_kafka(events, self.settings, EVENTS)
        if summary.errors:
            raise DrillError(f"injecting attack events failed: {summary.first_error}")
        self.injected_attacks += summary.sent
        self.say(f"replayed {summary.sent} events of {', '.join(SLOW_ATTACKS)} (to be triaged)")

    def inject_malformed(self, which: int) -> None:
        from agents.replay import replay_to_kafka
        from agents.scenarios import malformed_records
        from sentinel.kafka import EVENTS

        records = malformed_records(self.plan.malformed, seed=self.plan.seed * 10 + which)
        summary = replay_to_kafka(records, self.settings, EVENTS)
        if summary.errors:
            raise DrillError(f"injecting malformed records failed: {summary.first_error}")
        self.injected.append(summary.sent)
        self.say(f"injected {summary.sent} malformed records (they must reach the DLQ)")

    def land(self) -> Any:
        from orchestration.lib.landing import land
        from orchestration.lib.resources import KafkaResource, LakeResource

        s = self.settings
        lake = LakeResource(
            root=str(s.lake_root),
            consumer_group=s.lake_consumer_group,
            chunk_rows=s.lake_chunk_rows,
        )
        report = land(lake.landing_job("events", KafkaResource(bootstrap=s.kafka_bootstrap)))
        self.say(f"landed {report.rows:,} events into bronze ({report.rejected:,} to quarantine)")
        return report

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> DrillReport:
        import logging

        # The monitor's clients retry through the outages on purpose; their errors are noise here.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        began = time.monotonic()
        self.setup()
        monitor = threading.Thread(target=self._monitor, name="drill-monitor", daemon=True)
        for agent in self.agents.values():
            agent.start()
        for host, agent in self.agents.items():
            _wait(
                f"agent {host} started",
                functools.partial(_started, agent),
                60,
                agent,
            )
        self.produce_t0 = time.monotonic()
        self.say(
            f"producing: {len(self.agents)} agents x {self.plan.rate:.0f} events/s for "
            f"{self.plan.seconds:.0f} s ({self.plan.events_per_agent * len(self.agents):,} events)"
        )
        monitor.start()
        p = self.plan
        steps: list[tuple[float, Callable[[], Any]]] = [
            (0.05 * p.seconds, lambda: self.inject_malformed(1)),
            (p.KILL_AT * p.seconds, self.kill_worker),
            (p.RESTART_AT * p.seconds, self.restart_broker),
            (p.LAND_AT * p.seconds, self.land),
            (p.CUT_AT * p.seconds, self.cut_agent),
            (p.SLOW_AT * p.seconds, self.slow_upstream),
            (0.97 * p.seconds, lambda: self.inject_malformed(2)),
        ]
        for at, step in steps:
            while self.now() < at:
                self._check_children()
                time.sleep(0.2)
            step()
        self.settle()
        self._monitor_stop.set()
        monitor.join(10)
        self.land()
        report = DrillReport(p, self.root, started, faults=self.faults, samples=self.samples)
        report.checks = self.reconcile()
        report.elapsed_s = round(time.monotonic() - began, 1)
        return report

    def _check_children(self) -> None:
        for child in [self.worker, self.gateway, self.upstream, *self.agents.values()]:
            if child is not None:
                child.check()

    def settle(self) -> None:
        """Production ends; wait for every spool to empty, then the worker and triage."""
        from sentinel.kafka import ALERTS, EVENTS, offsets

        p = self.plan
        timeout = p.settle_timeout_s

        def shipped(host: str) -> bool:
            stats = self.agent_stats(host)
            return bool(
                stats.get("produced", 0) >= p.events_per_agent
                and stats.get("spool", {}).get("pending") == 0
            )

        for host, agent in self.agents.items():
            _wait(
                f"agent {host} produced its {p.events_per_agent:,} events",
                functools.partial(shipped, host),
                timeout,
                agent,
            )
        self.say("every agent produced its events and its spool is empty; stopping the agents")
        for host, agent in self.agents.items():
            code = agent.stop(timeout_s=60)
            if code != 0:
                raise DrillError(f"agent {host} exited with {code} on SIGTERM; see {agent.log}")
        s = self.settings

        def caught_up(group: str, topic: str) -> bool:
            end = offsets.end_offsets(s, topic)
            done = offsets.committed(s, group, topic)
            return all(done.get(p, 0) >= e for p, e in end.items())

        took = _wait(
            "the worker committed every event",
            lambda: caught_up(s.streams_detection_group, EVENTS),
            timeout,
            self.worker,
        )
        self.say(f"the worker committed every event ({took:.1f} s after the agents stopped)")
        took = _wait(
            "triage read every alert",
            lambda: caught_up(f"{s.streams_app_id}.triage", ALERTS),
            timeout,
            self.worker,
        )
        self.say(f"triage caught up ({took:.1f} s later)")
        with self._probe_lock:
            for record, since, _ in self._probes:
                record.recovered_s = round(time.monotonic() - since, 1)
                record.detail += " (caught up only once production ended)"
            self._probes.clear()

    # -- reconciliation -------------------------------------------------------------------------
    def reconcile(self) -> list[Check]:
        from sentinel.contracts import validator
        from sentinel.kafka import ALERTS, ALERTS_TRIAGED, EVENTS, EVENTS_DLQ, offsets

        s = self.settings
        self.say("reconciling: reading every topic back")
        events = offsets.read_from(s, EVENTS)
        valid = validator("event").is_valid
        checks: list[Check] = []

        # 1. agents -> events topic: every sequence number once, in order.
        produced = {h: int(self.agent_stats(h).get("produced", 0)) for h in self.hosts}
        dropped = sum(int(self.agent_stats(h).get("dropped", 0)) for h in self.hosts)
        seqs: dict[str, list[int]] = defaultdict(list)
        parsed: list[tuple[Any, dict[str, Any] | None]] = []
        for record in events:
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                parsed.append((record, None))
                continue
            ok = isinstance(value, dict) and valid(value)
            parsed.append((record, value if ok else None))
            if ok and value.get("host", {}).get("id") in produced:
                seqs[value["host"]["id"]].append(int(value["sensor"]["seq"]))
        lost = dup = 0
        order_breaks = 0
        for host, n in produced.items():
            got = seqs.get(host, [])
            counts = Counter(got)
            lost += sum(1 for i in range(1, n + 1) if i not in counts)
            dup += sum(c - 1 for c in counts.values() if c > 1)
            order_breaks += sum(1 for a, b in itertools.pairwise(got) if b <= a)
        expected = p_total = self.plan.events_per_agent * len(self.hosts)
        checks.append(
            Check(
                "agent events on sentinel.events.v1 (each sequence number once)",
                expected,
                sum(len(set(v)) for v in seqs.values()),
                lost + dropped + (p_total - sum(produced.values())),
                dup,
                f"{sum(produced.values()):,} produced by the agents, {dropped} dropped by their "
                f"spools, {order_breaks} out of order",
            )
        )

        # 2. every record processed or dead-lettered.
        end = offsets.end_offsets(s, EVENTS)
        done = offsets.committed(s, s.streams_detection_group, EVENTS)
        uncommitted = sum(max(0, e - done.get(p, 0)) for p, e in end.items())
        invalid = {(r.partition, r.offset) for r, v in parsed if v is None}
        letters: Counter[tuple[int, int]] = Counter()
        for record in offsets.read_from(s, EVENTS_DLQ):
            headers = {k: v for k, v in (record.headers or [])}
            try:
                source = (int(headers["source-partition"]), int(headers["source-offset"]))
            except (KeyError, TypeError, ValueError):
                continue
            letters[source] += 1
        checks.append(
            Check(
                "records processed (committed) or dead-lettered",
                len(events),
                len(events) - uncommitted - len(invalid - letters.keys()),
                uncommitted + len(invalid - letters.keys()),
                0,
                f"{len(events) - len(invalid):,} valid and committed (the agents' and "
                f"{self.injected_attacks} replayed attack events); {len(invalid)} malformed "
                f"({sum(self.injected)} injected) with {len(invalid & letters.keys())} in the DLQ; "
                f"{sum(c - 1 for c in letters.values())} dead letters written again after the "
                f"worker's crash (same source offsets)",
            )
        )

        # 3. alerts equal to an undisturbed run of the same events.
        reference = undisturbed_alerts(s, events)
        published: dict[str, dict[str, Any]] = {}
        alert_records = 0
        for record in offsets.read_from(s, ALERTS):
            value = orjson.loads(record.value)
            published[value["id"]] = value
            alert_records += 1
        missing = reference.keys() - published.keys()
        extra = published.keys() - reference.keys()
        (self.root / "alerts-diff.json").write_bytes(
            orjson.dumps(
                {
                    "missing": [reference[i] for i in sorted(missing)],
                    "unexpected": [published[i] for i in sorted(extra)],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        rules = Counter(a["rule"]["id"] for a in reference.values())
        checks.append(
            Check(
                "alerts (ids) equal to an undisturbed run's",
                len(reference),
                len(published.keys() & reference.keys()),
                len(missing),
                len(extra),
                f"{len(rules)} rules fired; {alert_records:,} alert records for "
                f"{len(published):,} ids (updates of suppressed alerts and republished ones "
                f"keep their id)",
            )
        )

        # 4. triage caught up: every alert that wants triage has a non-failed record.
        from streams.triage.triage import wants_triage

        wanted = {i for i, a in reference.items() if wants_triage(a, s.triage_min_severity)}
        statuses: dict[str, set[str]] = defaultdict(set)
        for record in offsets.read_from(s, ALERTS_TRIAGED):
            value = orjson.loads(record.value)
            statuses[value["alert_id"]].add(value.get("status", "triaged"))
        good = {i for i in wanted if statuses.get(i, set()) - {"failed"}}
        failed = sum(1 for i in wanted if statuses.get(i) == {"failed"})
        checks.append(
            Check(
                f"alerts at or above {s.triage_min_severity} triaged",
                len(wanted),
                len(good),
                len(wanted - good),
                0,
                f"{failed} only failed; {sum(len(v) for v in statuses.values()):,} triage "
                f"records for {len(statuses):,} alerts",
            )
        )

        # 5. the lake: every offset landed once (bronze or quarantine), none twice.
        checks.append(lake_check(s, end, offsets.beginning_offsets(s, EVENTS)))
        return checks

    def teardown(self) -> None:
        self._monitor_stop.set()
        for agent in self.agents.values():
            agent.stop(timeout_s=30)
        for child in [*self.workers, self.gateway, self.upstream]:
            if child is not None:
                child.stop(timeout_s=30)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop(timeout_s=30)
        self.agent_proxy.stop()
        self.upstream_proxy.stop()


def undisturbed_alerts(settings: Settings, records: list[Any]) -> dict[str, dict[str, Any]]:
    """What an undisturbed run publishes for these records: the worker's own pipeline in this
    process, each partition in offset order, every event id once (an agent that resends a chunk
    is not part of an undisturbed run)."""
    from sentinel.kafka import EVENTS
    from streams.detection.pipeline import RawRecord
    from streams.runtime import Runtime

    runtime = Runtime(settings)
    alerts: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)

    def batches() -> Iterator[list[RawRecord]]:
        for partition in sorted(by_partition):
            batch: list[RawRecord] = []
            for r in sorted(by_partition[partition], key=lambda r: r.offset):
                with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
                    event_id = orjson.loads(r.value).get("id")
                    if isinstance(event_id, str):
                        if event_id in seen:
                            continue
                        seen.add(event_id)
                batch.append(RawRecord(r.key, r.value, EVENTS, partition, r.offset))
                if len(batch) == 1000:
                    yield batch
                    batch = []
            if batch:
                yield batch

    for batch in batches():
        for alert in asyncio.run(runtime.process(batch)).alerts:
            alerts[alert["id"]] = alert
    return alerts


def lake_check(settings: Settings, end: dict[int, int], begin: dict[int, int]) -> Check:
    import duckdb

    from orchestration.lib.bronze import LakePaths
    from sentinel.kafka import EVENTS

    paths = LakePaths(settings.lake_root)
    files = [
        str(f)
        for folder in (paths.bronze(EVENTS), paths.quarantine(EVENTS))
        for f in folder.rglob("*.parquet")
    ]
    landed: Counter[tuple[int, int]] = Counter()
    if files:
        relation = duckdb.sql(
            "SELECT kafka_partition, kafka_offset FROM read_parquet($files, union_by_name=true)",
            params={"files": files},
        )
        assert relation is not None
        rows = relation.fetchall()
        landed.update((int(p), int(o)) for p, o in rows)
    want = sum(end[p] - begin.get(p, 0) for p in end)
    gaps = sum(1 for p in end for o in range(begin.get(p, 0), end[p]) if (p, o) not in landed)
    twice = sum(c - 1 for c in landed.values() if c > 1)
    return Check(
        "lake landing: every offset in bronze or quarantine once",
        want,
        len(landed),
        gaps,
        twice,
        f"{len(files)} Parquet files; {gaps} gaps, {twice} offsets landed twice",
    )
