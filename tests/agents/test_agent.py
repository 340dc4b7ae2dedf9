"""The agent runtime on the real broker: delivery, order, rejects, rule-driven filtering, outages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.agent import Agent
from agents.config import load_config
from agents.filters import rates_for
from agents.sensors.base import Sensor
from sentinel.contracts import validate
from sentinel.kafka import EVENTS, EmbeddedBroker, ensure_contract_topics, free_port
from sentinel.kafka.clients import producer
from sentinel.settings import Settings
from tests.agents.agentproc import AgentProcess, Tail


def host_id() -> str:
    return f"agent-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agent_process(tmp_path: Path, kafka: Settings) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def make(config: dict[str, Any], settings: Settings | None = None) -> AgentProcess:
        agent = AgentProcess(settings or kafka, tmp_path, config, None)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def base_config(host: str, **extra: Any) -> dict[str, Any]:
    return {"host": {"id": host}, "stats_interval_s": 0.5, **extra}


def test_every_event_arrives_once_in_order_with_identity(
    kafka: Settings, new_topic: Callable[..., str], agent_process: Callable[..., AgentProcess]
) -> None:
    # A topic of its own: these events carry current timestamps, which the detection workers
    # of later tests would otherwise replay when they warm their windows.
    topic = new_topic(partitions=3)
    host = host_id()
    tail = Tail(kafka, topic, host)
    agent = agent_process(
        base_config(
            host, topic=topic, sensors={"scenario": {"rate": 2000, "count": 3000, "seed": 3}}
        )
    ).start()
    try:
        events = tail.wait_count(3000, timeout_s=60)
        stats = agent.wait_stats(lambda s: s["produced"] == 3000, timeout_s=30)
    finally:
        assert agent.stop() == 0
        tail.close()
    assert len(events) == 3000
    assert [e["sensor"]["seq"] for e in events] == list(range(1, 3001))
    assert len({e["id"] for e in events}) == 3000
    for event in events:
        validate("event", event)
    assert {e["host"]["id"] for e in events} == {host}
    assert {e["sensor"]["name"] for e in events} == {"scenario"}
    assert {e["kind"] for e in events} == {"proc", "file", "net", "dns", "auth"}
    assert stats["spool"]["pending"] == 0 and stats["dropped"] == 0 and stats["invalid"] == 0
    final = agent.stats()  # written at the clean stop
    assert final["produced"] == final["accepted"] == 3000


class ListSensor(Sensor):
    """A sensor yielding a fixed list, for the agent's own checks (rejects, sampling)."""

    name = "list"
    kinds = ("proc",)

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__({})
        self.items = items

    def events(self) -> Iterator[dict[str, Any]]:
        yield from self.items
        self.stopping.wait()


def proc(pid: int, **fields: Any) -> dict[str, Any]:
    return {"kind": "proc", "proc": {"action": "exec", "pid": pid, "exe": "/bin/x", **fields}}


def test_an_invalid_event_is_rejected_with_its_reason_and_kept_on_disk(
    tmp_path: Path, kafka: Settings
) -> None:
    host = host_id()
    settings = kafka.model_copy(update={"state_dir": tmp_path})
    config = load_config(None, base_config(host, rules={"follow": False}))
    bad = {"kind": "proc", "proc": {"action": "exec", "pid": "12", "exe": "/bin/x"}}
    huge = proc(3, cmdline="A" * 300_000)
    sensor = ListSensor([proc(1), bad, proc(2), huge])
    tail = Tail(kafka, EVENTS, host)
    agent = Agent(config, settings, sensors=[sensor])
    agent.start()
    try:
        events = tail.wait_count(2, timeout_s=30)
    finally:
        stats = agent.stop()
        tail.close()
    assert [e["proc"]["pid"] for e in events] == [1, 2]
    assert stats["invalid"] == 2 and stats["produced"] == 2
    rejected = [
        orjson.loads(line)
        for line in (agent.dir / "rejected.jsonl").read_bytes().split(b"\n")
        if line
    ]
    assert [r["event"]["proc"]["pid"] for r in rejected] == ["12", 3]
    assert "proc.pid" in rejected[0]["reason"] and "integer" in rejected[0]["reason"]
    assert "exceeds 262144" in rejected[1]["reason"]


def test_rates_across_packs() -> None:
    proc_only = {
        "name": "a",
        "rules": [{"kinds": ["proc"]}],
        "agent": {"drop_unneeded_kinds": True},
    }
    dns_sampled = {
        "name": "b",
        "rules": [{"kinds": ["dns"]}],
        "agent": {"drop_unneeded_kinds": True, "sample": {"dns": 0.25}},
    }
    keeps_all = {"name": "c", "rules": [{"kinds": ["file"]}]}
    assert rates_for({}) == dict.fromkeys(("proc", "file", "net", "dns", "auth"), 1.0)
    assert rates_for({"a": proc_only}) == {"proc": 1.0, "file": 0, "net": 0, "dns": 0, "auth": 0}
    assert rates_for({"a": proc_only, "b": dns_sampled}) == {
        "proc": 1.0,
        "file": 0,
        "net": 0,
        "dns": 0.25,
        "auth": 0,
    }
    # a pack that does not ask for dropping wants every kind, at full rate
    assert set(rates_for({"a": proc_only, "c": keeps_all}).values()) == {1.0}


def pack(version: str, kinds: list[str], agent: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "schema": "sentinel.rule-pack/1",
            "name": "agent-filter-test",
            "version": version,
            "rules": [
                {
                    "id": "t.noop",
                    "title": "never matches",
                    "severity": "low",
                    "kinds": kinds,
                    "source": "false",
                }
            ],
            "agent": agent,
        }
    )


def test_agent_side_filters_follow_the_rules_topic_hot(
    kafka: Settings,
    new_topic: Callable[..., str],
    agent_process: Callable[..., AgentProcess],
) -> None:
    rules_topic = new_topic(partitions=1)
    send = producer(kafka)
    send.send(
        rules_topic,
        key=b"agent-filter-test",
        value=pack("1.0.0", ["proc"], {"drop_unneeded_kinds": True}),
    )
    send.flush()
    host = host_id()
    events_topic = new_topic(partitions=3)  # its own, as above
    tail = Tail(kafka, events_topic, host)
    agent = agent_process(
        base_config(
            host,
            topic=events_topic,
            rules={"follow": True, "topic": rules_topic},
            sensors={"scenario": {"rate": 400, "count": 100_000, "seed": 5}},
        )
    ).start()
    try:
        applied = agent.wait_stats(lambda s: s["rule_packs"] == {"agent-filter-test": "1.0.0"}, 30)
        first = agent.wait_stats(lambda s: s["filtered"] > 300 and s["produced"] > 100, 30)
        # hot reload: the next version also needs dns, and samples a fifth of it
        send.send(
            rules_topic,
            key=b"agent-filter-test",
            value=pack(
                "1.1.0", ["proc", "dns"], {"drop_unneeded_kinds": True, "sample": {"dns": 0.2}}
            ),
        )
        send.flush()
        reloaded = agent.wait_stats(lambda s: s["rule_packs"] == {"agent-filter-test": "1.1.0"}, 30)
        agent.wait_stats(lambda s: s["sampled"] > 100, 40)
    finally:
        assert agent.stop() == 0
        send.close()
    tail.wait_count(agent.stats()["produced"], timeout_s=30)
    events = tail.events
    assert len(events) == agent.stats()["produced"]
    assert first["kind_rates"] == {"proc": 1.0, "file": 0, "net": 0, "dns": 0, "auth": 0}

    # Events accepted after a stats snapshot that shows a pack went through that pack's filter.
    def kinds(low: int, high: int) -> set[str]:
        return {e["kind"] for e in events if low < e["sensor"]["seq"] <= high}

    assert kinds(applied["accepted"], first["accepted"]) == {"proc"}
    assert kinds(reloaded["accepted"], 10**9) == {"proc", "dns"}
    stats = agent.stats()
    assert stats["kind_rates"]["dns"] == 0.2 and stats["kind_rates"]["net"] == 0
    assert stats["filtered"] > 0 and stats["sampled"] > 0


def test_a_broker_outage_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, agent_process: Callable[..., AgentProcess]
) -> None:
    """Stop the broker while the agent produces, keep producing 30 s, restart it."""
    port = free_port()
    settings = Settings(
        state_dir=tmp_path / "outage-broker",
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_controller_port=free_port(),
        kafka_partitions=3,
    )
    broker = EmbeddedBroker(settings, say=lambda line: print(f"[outage-broker] {line}"))
    broker.start()
    try:
        ensure_contract_topics(settings)
        host = host_id()
        agent = agent_process(
            base_config(
                host,
                rules={"follow": False},
                sensors={"scenario": {"rate": 300, "count": 1_000_000, "seed": 9}},
            ),
            settings,
        ).start()
        agent.wait_stats(lambda s: s["produced"] > 600, 60)
        broker.stop()
        outage_started = time.monotonic()
        during = agent.wait_stats(lambda s: s["spool"]["pending"] > 3000, 60)
        assert not during["connected"]
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
        spooled = agent.stats()["spool"]["pending"]
        assert spooled > 7000  # 30 s at 300 events/s waited in the spool
        broker.start()
        agent.wait_stats(lambda s: s["connected"] and s["spool"]["pending"] < 600, 120)
        assert agent.stop() == 0
        final = agent.stats()
        assert final["spool"]["pending"] == 0
        assert final["produced"] == final["accepted"] > 9000
        tail_settings = settings
        from sentinel.kafka.offsets import read_from

        records = [r for r in read_from(tail_settings, EVENTS) if r.key == host.encode()]
        seqs = [orjson.loads(r.value)["sensor"]["seq"] for r in records]
        assert len(seqs) == final["produced"]
        assert seqs == list(range(1, len(seqs) + 1))  # exactly once, in order
        assert len({r.partition for r in records}) == 1
    finally:
        broker.stop()


def test_a_second_agent_for_the_same_host_is_refused(tmp_path: Path) -> None:
    from agents.agent import AgentError

    settings = Settings(state_dir=tmp_path)
    config = load_config(None, base_config("same-host", rules={"follow": False}))
    first = Agent(config, settings, sensors=[ListSensor([])])
    with pytest.raises(AgentError, match="another agent for host same-host is running"):
        Agent(config, settings, sensors=[ListSensor([])])
    first._lock_file.close()
    Agent(config, settings, sensors=[ListSensor([])])._lock_file.close()  # free again
