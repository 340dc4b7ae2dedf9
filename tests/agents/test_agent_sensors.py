"""The acceptance path with real sensors: an action on this host -> its event in Kafka.

One `sentinel agent run` process with procfs, bcc-exec, inotify, netconn, bcc-net and dns runs
for the module (xdp-flows gets its own, on a veth pair the test makes); each test does something real on the host (runs a program, touches files,
connects, resolves) and finds the matching event, published by the agent, in
`sentinel.events.v1` under this agent's host id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.contracts import validate
from sentinel.kafka import EVENTS
from sentinel.settings import Settings
from tests.agents.agentproc import AgentProcess, Tail
from tests.agents.sensors.test_dns_auth_etw import Resolver, ask, build_query

Event = dict[str, Any]


class Host:
    def __init__(self, agent: AgentProcess, tail: Tail, watched: Path, resolver: Resolver) -> None:
        self.agent = agent
        self.tail = tail
        self.watched = watched
        self.resolver = resolver


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, kafka: Settings) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("agent-sensors")
    watched = tmp / "watched"
    watched.mkdir()
    resolver = Resolver("127.0.0.1")
    host_id = f"sensor-test-{uuid.uuid4().hex[:8]}"
    config = {
        "host": {"id": host_id},
        "stats_interval_s": 0.5,
        "rules": {"follow": False},
        "sensors": {
            "procfs": {"interval_s": 0.25},
            "bcc-exec": {},
            "inotify": {"paths": [str(watched)]},
            "netconn": {"interval_s": 0.25},
            "bcc-net": {},
            "dns": {"interface": "lo", "ports": [resolver.port], "timeout_s": 1.0},
        },
    }
    tail = Tail(kafka, EVENTS, host_id)
    agent = AgentProcess(kafka, tmp, config, None).start()
    try:
        started = agent.wait_stats(lambda s: "sensors" in s, 30)
        assert started["unavailable"] == {}, started["unavailable"]
        yield Host(agent, tail, watched, resolver)
    finally:
        assert agent.stop() == 0
        tail.close()
        resolver.close()
    final = agent.stats()
    assert final["spool"]["pending"] == 0 and final["invalid"] == 0, final


def from_sensor(name: str, kind: str, **fields: Any) -> Any:
    def match(event: Event) -> bool:
        body = event.get(kind) or {}
        return (
            event["sensor"]["name"] == name
            and event["kind"] == kind
            and all(body.get(k) == v for k, v in fields.items())
        )

    return match


def test_a_new_program_is_seen_by_procfs_and_bcc_exec_within_2s(host: Host, tmp_path: Path) -> None:
    program = tmp_path / f"sentinel-probe-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/sleep", program)
    started = time.monotonic()
    child = subprocess.Popen([str(program), "1.2"])
    try:
        for sensor in ("bcc-exec", "procfs"):
            left = 2.0 - (time.monotonic() - started)
            event = host.tail.wait_for(
                from_sensor(sensor, "proc", action="exec", exe=str(program)),
                timeout_s=max(left, 0.0),
                what=f"{sensor} exec of {program.name}",
            )
            validate("event", event)
            assert event["proc"]["pid"] == child.pid
            assert event["proc"]["ppid"] == os.getpid()
            assert event["proc"]["cmdline"] == f"{program} 1.2"
            assert event["proc"]["user"] == "root"
            assert event["host"]["id"] == host.agent.host
    finally:
        child.wait()
    for sensor in ("bcc-exec", "procfs"):
        host.tail.wait_for(
            from_sensor(sensor, "proc", action="exit", pid=child.pid),
            timeout_s=5,
            what=f"{sensor} exit of {child.pid}",
        )


def test_file_changes_become_file_events(host: Host) -> None:
    name = f"f-{uuid.uuid4().hex[:6]}"
    path = host.watched / f"{name}.txt"
    path.write_bytes(b"hello sentinel\n")
    host.tail.wait_for(from_sensor("inotify", "file", action="modify", path=str(path)), 5, "modify")
    renamed = path.with_suffix(".locked")
    path.rename(renamed)
    event = host.tail.wait_for(
        from_sensor("inotify", "file", action="rename", path=str(path)), 5, "rename"
    )
    assert event["file"]["new_path"] == str(renamed)
    renamed.unlink()
    host.tail.wait_for(
        from_sensor("inotify", "file", action="delete", path=str(renamed)), 5, "delete"
    )
    kinds = [
        e["file"]["action"]
        for e in host.tail.events
        if e["kind"] == "file" and name in e["file"]["path"]
    ]
    assert kinds == ["create", "modify", "rename", "delete"]


def test_a_loopback_tcp_connection_becomes_net_events(host: Host) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    try:
        for sensor in ("bcc-net", "netconn"):
            event = host.tail.wait_for(
                from_sensor(sensor, "net", action="connect", dst_port=port), 10, f"{sensor} connect"
            )
            validate("event", event)
            assert event["net"]["proto"] == "tcp" and event["net"]["dst_ip"] == "127.0.0.1"
            assert event["net"]["pid"] == os.getpid()
            assert event["net"]["src_port"] == client.getsockname()[1]
        host.tail.wait_for(
            from_sensor("netconn", "net", action="accept", dst_port=port), 10, "netconn accept"
        )
    finally:
        client.close()
        server.close()
        listener.close()


def test_dns_queries_to_a_loopback_resolver_become_dns_events(host: Host) -> None:
    keep: list[socket.socket] = []
    names = [f"h{i}-{uuid.uuid4().hex[:6]}.sentinel.test" for i in range(1, 4)]
    try:
        replies = [
            ask(("127.0.0.1", host.resolver.port), build_query(0x4200 + i, name), keep)
            for i, name in enumerate(names)
        ]
        ask(("127.0.0.1", host.resolver.port), build_query(0x4300, "nope.example"), keep)
        for name, reply in zip(names, replies, strict=True):
            event = host.tail.wait_for(from_sensor("dns", "dns", query=name), 5, f"dns {name}")
            validate("event", event)
            assert event["dns"]["qtype"] == "A" and event["dns"]["rcode"] == "NOERROR"
            assert event["dns"]["answers"] == [socket.inet_ntoa(reply[-4:])]  # the A record
            assert event["dns"]["server"] == "127.0.0.1"
        missing = host.tail.wait_for(from_sensor("dns", "dns", query="nope.example"), 5, "nx")
        assert missing["dns"]["rcode"] == "NXDOMAIN" and missing["dns"].get("answers", []) == []
    finally:
        for client in keep:
            client.close()


def test_xdp_flow_counts_on_a_test_made_veth_reach_kafka(
    veth_netns: dict[str, str], kafka: Settings, tmp_path: Path
) -> None:
    n, payload, sport, dport = 40, 100, 41001, 41002
    host_id = f"xdp-test-{uuid.uuid4().hex[:8]}"
    config = {
        "host": {"id": host_id},
        "stats_interval_s": 0.5,
        "rules": {"follow": False},
        "sensors": {"xdp-flows": {"interface": veth_netns["root_if"], "interval_s": 0.5}},
    }
    tail = Tail(kafka, EVENTS, host_id)
    agent = AgentProcess(kafka, tmp_path, config, None).start()
    try:
        send = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(({veth_netns['ns_ip']!r}, {sport}))\n"
            f"for _ in range({n}):\n"
            f"    s.sendto(b'x' * {payload}, ({veth_netns['root_ip']!r}, {dport}))\n"
        )
        subprocess.run(["ip", "netns", "exec", veth_netns["ns"], "python3", "-c", send], check=True)

        def ours(event: Event) -> bool:
            net = event.get("net") or {}
            return net.get("src_port") == sport and net.get("dst_port") == dport

        deadline = time.monotonic() + 10
        while sum(e["net"]["packets"] for e in tail.events if ours(e)) < n:
            assert time.monotonic() < deadline, f"flows so far: {tail.events}"
            tail.poll()
    finally:
        assert agent.stop() == 0
        tail.close()
    flows = [e for e in tail.events if ours(e)]
    assert sum(e["net"]["packets"] for e in flows) == n
    assert sum(e["net"]["bytes_in"] for e in flows) == n * (14 + 20 + 8 + payload)
    for event in flows:
        validate("event", event)
        assert event["sensor"]["name"] == "xdp-flows" and event["net"]["action"] == "flow"
        assert event["net"]["src_ip"] == veth_netns["ns_ip"]
        assert event["net"]["dst_ip"] == veth_netns["root_ip"]
