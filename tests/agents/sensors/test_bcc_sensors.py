"""The eBPF sensors (bcc-exec, bcc-net, xdp-flows) against the real kernel of this host.

No fakes: each test loads the real BPF program, makes the kernel do something (exec a uniquely
named binary, open a TCP connection, send UDP packets through a veth pair from a network
namespace) and asserts the events that come out, field by field, and that each event passes
the event contract once the agent's fields are added. `check()` must return [] here: a host
that cannot run the sensors fails these tests with what it lacks. Plus unit tests of the pure
record -> event functions with hand-made raw records.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.sensors import create
from agents.sensors._bcc import Timestamps
from agents.sensors.base import Event, Sensor
from agents.sensors.bcc_exec import (
    FILENAME_LEN,
    T_EXEC,
    T_EXIT,
    BccExecSensor,
    ExecRecord,
    ExitRecord,
    decode,
    exec_event,
)
from agents.sensors.bcc_net import K_ACCEPT, K_CONNECT, BccNetSensor, net_event
from agents.sensors.bcc_net import decode as decode_net
from agents.sensors.xdp_flows import XdpFlowsSensor, flow_event
from sentinel.contracts import errors
from tests.agents.sensors.helpers import Running, sh
from tests.agents.sensors.helpers import running as run_sensor


def contract_errors(event: Event, sensor: Sensor) -> list[tuple[str, str]]:
    """What the agent would reject once it adds schema, id, host and sensor."""
    full = {
        "schema": "sentinel.event/1",
        "id": uuid.uuid4().hex,
        "host": {"id": "test-host"},
        "sensor": {"name": sensor.name, "version": sensor.version},
        **event,
    }
    return errors("event", full)


def procs(events: list[Event], action: str, exe: str | None = None) -> list[dict[str, Any]]:
    return [
        e["proc"]
        for e in events
        if e["kind"] == "proc"
        and e["proc"]["action"] == action
        and (exe is None or e["proc"]["exe"] == exe)
    ]


# -- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bcc-exec", "bcc-net"])
def test_check_passes_on_this_host(name: str) -> None:
    sensor = create(name)
    assert sensor.check() == []


def test_xdp_check_passes_and_names_what_is_missing() -> None:
    assert XdpFlowsSensor({"interface": "lo"}).check() == []
    assert XdpFlowsSensor({}).check() == [
        "option interface is required (the device to count flows on)"
    ]
    assert XdpFlowsSensor({"interface": "sl-no-such0"}).check() == [
        "network interface sl-no-such0 does not exist"
    ]


# -- bcc-exec -------------------------------------------------------------------------------


@pytest.fixture
def exec_sensor() -> Iterator[Running]:
    with run_sensor(BccExecSensor(), stop_timeout=1.5) as running:
        yield running


def test_exec_and_exit_of_a_child(exec_sensor: Running, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    binary = tmp_path / f"sl-sleep-{tag}"
    shutil.copy("/bin/sleep", binary)
    digits = str(int(tag, 16) % 10**6).zfill(6)
    args = ["0.6", f"0.000{digits}"]  # sleep adds its arguments up; the second one is unique
    child = subprocess.Popen([str(binary), *args], cwd=tmp_path)
    try:
        execs = exec_sensor.wait_until(lambda ev: procs(ev, "exec", str(binary)), 2.0)
        assert execs, "no exec event within 2 s"
        child.wait(10)
        exits = exec_sensor.wait_until(
            lambda ev: [p for p in procs(ev, "exit") if p["pid"] == child.pid], 3.0
        )
    finally:
        if child.poll() is None:
            child.kill()
    assert len(execs) == 1
    proc = execs[0]
    assert proc["pid"] == child.pid
    assert proc["ppid"] == os.getpid()
    assert proc["cmdline"] == f"{binary} {args[0]} {args[1]}"
    assert proc["uid"] == 0
    assert proc["user"] == "root"
    assert proc["cwd"] == str(tmp_path)
    assert proc["parent_exe"] == os.path.realpath(f"/proc/{os.getpid()}/exe")
    event = next(e for e in exec_sensor.events if e.get("proc") is proc)
    assert contract_errors(event, exec_sensor.sensor) == []
    # the timestamp is the kernel's, within a second of now
    assert abs(_epoch(event["ts"]) - time.time()) < 5

    assert len(exits) == 1
    assert exits[0]["exe"] == str(binary)
    assert exits[0]["ppid"] == os.getpid()
    assert exits[0]["user"] == "root"
    exit_event = next(e for e in exec_sensor.events if e.get("proc") is exits[0])
    assert contract_errors(exit_event, exec_sensor.sensor) == []
    assert _epoch(exit_event["ts"]) >= _epoch(event["ts"]) + 0.5


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_no_short_lived_exec_is_missed(exec_sensor: Running, tmp_path: Path) -> None:
    binary = tmp_path / f"sl-true-{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/true", binary)
    pids: dict[int, str] = {}
    for i in range(200):
        child = subprocess.Popen([str(binary), f"run-{i}"])
        pids[child.pid] = f"{binary} run-{i}"
        child.wait()

    def all_seen(events: list[Event]) -> bool:
        seen = {p["pid"] for p in procs(events, "exec", str(binary))}
        gone = {p["pid"] for p in procs(events, "exit") if p["pid"] in pids}
        return seen >= pids.keys() and gone >= pids.keys()

    exec_sensor.wait_until(all_seen, 5.0)
    exec_sensor.stop()
    execs = {p["pid"]: p for p in procs(exec_sensor.events, "exec", str(binary))}
    assert sorted(set(pids) - set(execs)) == [], "execs missed"
    assert len(execs) == 200
    for pid, cmdline in pids.items():
        assert execs[pid]["cmdline"] == cmdline
        assert execs[pid]["ppid"] == os.getpid()
    exits = [p for p in procs(exec_sensor.events, "exit") if p["pid"] in pids]
    assert len(exits) == 200
    assert {p["exe"] for p in exits} == {str(binary)}
    assert exec_sensor.sensor.counters.get("lost", 0) == 0


def test_exit_events_can_be_turned_off(tmp_path: Path) -> None:
    binary = tmp_path / f"sl-true-{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/true", binary)
    with run_sensor(BccExecSensor({"exit_events": False}), stop_timeout=1.5) as running:
        child = subprocess.Popen([str(binary)])
        child.wait()
        assert running.wait_until(lambda ev: procs(ev, "exec", str(binary)), 2.0)
        time.sleep(0.3)
    assert procs(running.events, "exit") == []


def test_a_full_ring_buffer_is_counted_as_lost(tmp_path: Path) -> None:
    """One 4 KiB ring page, not drained while 50 processes run: the overflow is counted."""
    binary = tmp_path / f"sl-true-{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/true", binary)
    sensor = BccExecSensor({"ring_pages": 1, "cwd": False})
    assert sensor.check() == []
    sensor.start()
    pids = set()
    for _ in range(50):
        child = subprocess.Popen([str(binary)])
        pids.add(child.pid)
        child.wait()
    with run_sensor(sensor, start=False, stop_timeout=1.5) as running:  # started: drain now
        time.sleep(0.5)
    ours = [e["proc"] for e in running.events if e["proc"]["pid"] in pids]
    lost = sensor.counters.get("lost", 0)
    assert 0 < len(ours) < 100, "a 4 KiB ring cannot hold 50 execs and exits"
    assert lost > 0
    # every record of ours is either delivered or counted (other processes may add losses)
    assert len(ours) + lost >= 100


def test_stop_without_events_frees_the_program() -> None:
    sensor = BccExecSensor()
    sensor.start()
    assert sensor.bpf is not None
    sensor.stop()
    assert sensor.bpf is None
    assert list(sensor.events()) == []


def test_exec_record_to_event() -> None:
    """The pure decode + build path, with a record laid out as the BPF program writes it."""
    argv = b"/usr/bin/curl\0-s\0http://example.test/x y\0"
    raw = (
        struct.pack(
            f"<10IQ16s{FILENAME_LEN}s",
            T_EXEC,
            4242,  # pid
            4243,  # tid that called execve
            4000,  # ppid
            1000,  # uid
            1000,  # gid
            3,  # argc
            0,  # truncated
            len(argv),
            0,
            123_456_789,
            b"curl",
            b"/usr/bin/curl",
        )
        + argv
    )
    rec = decode(raw)
    assert rec == ExecRecord(
        pid=4242,
        tid=4243,
        ppid=4000,
        uid=1000,
        gid=1000,
        ktime_ns=123_456_789,
        comm="curl",
        filename="/usr/bin/curl",
        argv=["/usr/bin/curl", "-s", "http://example.test/x y"],
        truncated=False,
    )
    assert isinstance(rec, ExecRecord)
    event = exec_event(
        rec,
        ts="2026-12-03T08:00:00.000001Z",
        ppid=rec.ppid,
        user="alice",
        parent_exe="/bin/bash",
        cwd="/home/alice",
    )
    assert event == {
        "kind": "proc",
        "ts": "2026-12-03T08:00:00.000001Z",
        "proc": {
            "action": "exec",
            "pid": 4242,
            "exe": "/usr/bin/curl",
            "uid": 1000,
            "cmdline": "/usr/bin/curl -s http://example.test/x y",
            "ppid": 4000,
            "user": "alice",
            "parent_exe": "/bin/bash",
            "cwd": "/home/alice",
        },
    }
    assert contract_errors(event, BccExecSensor()) == []

    exit_raw = struct.pack("<4IQ16s", T_EXIT, 4242, 4000, 1000, 223_456_789, b"curl")
    assert decode(exit_raw) == ExitRecord(4242, 4000, 1000, 223_456_789, "curl")
    assert decode(b"\x09\0\0\0") is None

    # an exec record whose argv could not be read, of a process that is already gone
    sensor = BccExecSensor()
    bare = struct.pack(
        f"<10IQ16s{FILENAME_LEN}s", T_EXEC, 2**22 + 7, 2**22 + 7, 0, 0, 0, 0, 0, 0, 0, 1, b"x", b""
    )
    rec = decode(bare)
    assert isinstance(rec, ExecRecord)
    event = sensor.on_exec(rec, gone={rec.pid})
    assert event["proc"] == {
        "action": "exec",
        "pid": 2**22 + 7,
        "exe": "x",
        "uid": 0,
        "cmdline": "x",
        "user": "root",
    }


def _exec_raw(
    pid: int,
    ppid: int,
    argv: tuple[bytes, ...] = (),
    *,
    filename: bytes = b"",
    comm: bytes = b"",
    uid: int = 0,
    ktime: int = 5_000_000_123,
    truncated: int = 0,
    filename_len: int | None = None,
    args: bytes | None = None,
) -> bytes:
    """An exec record as the BPF program writes it (the filename's length in filename_len)."""
    buf = b"".join(a + b"\0" for a in argv) if args is None else args
    name = filename.split(b"\0", 1)[0]
    fn_len = len(name) if filename_len is None else filename_len
    head = struct.pack(
        f"<10IQ16s{FILENAME_LEN}s",
        T_EXEC,
        pid,
        pid,
        ppid,
        uid,
        uid,
        len(argv),
        truncated,
        len(buf),
        fn_len,
        ktime,
        comm,
        filename,
    )
    return head + buf


def _exit_raw(
    pid: int, ppid: int, comm: bytes = b"", uid: int = 0, ktime: int = 6_000_000_000
) -> bytes:
    return struct.pack("<4IQ16s", T_EXIT, pid, ppid, uid, ktime, comm)


def _reference_events(sensor: BccExecSensor, batch: list[bytes]) -> list[Event]:
    """handle_batch() record by record: decode(), on_exec() / on_exit()."""
    recs = [decode(raw) for raw in batch]
    gone = {r.pid for r in recs if isinstance(r, ExitRecord)}
    out: list[Event] = []
    for rec in recs:
        if isinstance(rec, ExecRecord):
            out.append(sensor.on_exec(rec, gone))
        elif isinstance(rec, ExitRecord):
            event = sensor.on_exit(rec)
            if event is not None:
                out.append(event)
        else:
            sensor.count("bad_records")
    return out


@pytest.mark.parametrize("options", [{}, {"exit_events": False}, {"cwd": False}])
def test_the_fused_batch_path_matches_the_record_by_record_one(options: dict[str, Any]) -> None:
    """handle_batch() (one fused loop over the raw bytes) makes the very events decode() +
    on_exec() / on_exit() make, key order included, for every kind of record the BPF side
    writes and some it does not."""
    me, gone = os.getpid(), 2**22 + 100  # this process (alive: its cwd is read); no such pids
    first = [
        _exec_raw(
            gone + 1,
            me,
            (b"/usr/bin/curl", b"-s", b"http://example.test/x y"),
            filename=b"/usr/bin/curl\0stale bytes of an earlier record",
            comm=b"curl",
            ktime=5_000_000_123,
        ),
        _exec_raw(me, me, (b"/bin/x", b"", b"z"), filename=b"/bin/x", comm=b"x", uid=1000),
        _exec_raw(  # not UTF-8, in the filename and the arguments
            gone + 2,
            gone + 1,
            (b"/opt/\xe2\x82", b"caf\xc3\xa9", b"\xff\xfe\xe2", b"\xe2\x82"),
            filename=b"/opt/\xe2\x82",
            comm=b"\xe2\x82",
            ktime=5_000_999_999,
        ),
        _exec_raw(gone + 3, 1, filename=b"/sbin/init", comm=b"init", ktime=5_001_000_000),
        _exec_raw(gone + 4, 1, filename=b"/sbin/init", comm=b""),  # no argv, no comm
        _exec_raw(gone + 5, me, (b"/bin/big", b"a" * 255), filename=b"/bin/big", truncated=1),
        _exec_raw(gone + 6, me, (b"./run",), filename=b"./run", comm=b"run"),  # relative
        _exec_raw(gone + 7, 0, (b"/bin/true",), filename=b"/bin/true"),  # fork not seen
        _exec_raw(gone + 8, me, (b"/bin/a",), filename=b"/bin/a", filename_len=0),  # old layout
        _exec_raw(gone + 9, me, (b"/bin/a",), filename=b"/bin/a", filename_len=FILENAME_LEN),
        _exec_raw(gone + 10, me, (b"/bin/a", b"b"), filename=b"/bin/a", args=b"/bin/a\0b"),
        _exec_raw(gone + 11, me, (b"/bin/a",), filename=b"/bin/a", args=b""),  # argc, no bytes
        _exec_raw(gone + 12, me, (b"/bin/a",), filename=b"/bin/a", uid=4_000_000),  # no user
        _exit_raw(gone + 1, me, b"curl"),
        _exit_raw(gone + 20, gone + 2, b"child"),  # never exec'd: its parent's image
        _exit_raw(gone + 21, 0, b"lone"),
        _exit_raw(gone + 22, 0, b""),
        _exit_raw(gone + 4, 0),
        b"",
        b"\x09\0\0\0",
        _exec_raw(gone + 13, me, (b"/bin/a",), filename=b"/bin/a")[:100],  # cut short
        _exit_raw(gone + 23, me)[:30],
    ]
    second = [_exit_raw(pid, 0, b"later") for pid in range(gone + 2, gone + 14)]
    second.append(b"")
    fused, reference = BccExecSensor(options), BccExecSensor(options)
    fused._ts = reference._ts = Timestamps()
    for batch in (first, second):
        expected = _reference_events(reference, batch)
        got = fused.handle_batch(batch)
        assert got == expected
        assert [list(e["proc"]) for e in got] == [list(e["proc"]) for e in expected]
    assert fused.counters == reference.counters
    assert fused.counters["bad_records"] == 5
    assert fused.exes.data == reference.exes.data
    assert fused.ppids.cache.data == reference.ppids.cache.data
    # what the fast path looked up for a live process
    proc = BccExecSensor(options).handle_batch(first[1:2])[0]["proc"]
    assert proc.get("cwd") == (os.getcwd() if options.get("cwd", True) else None)
    assert proc["parent_exe"] == os.path.realpath(f"/proc/{me}/exe")


def test_timestamps_are_the_kernel_clock_as_rfc3339() -> None:
    stamps = Timestamps()
    base = 7_200_000_000_000  # two hours of uptime, in ns
    for ktime in (base, base + 999, base + 1_000, base + 999_999, base + 1_000_000, base - 1):
        for step in (0, 1, 999_000, 1_000_000_000, 86_400 * 10**9):
            k = ktime + step
            sec, micros = divmod(k // 1000 + stamps.offset_us, 1_000_000)
            expected = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            assert stamps.format(k) == f"{expected}.{micros:06d}Z"
    assert abs(_epoch(stamps.format(time.monotonic_ns())) - time.time()) < 1


# -- bcc-net --------------------------------------------------------------------------------


def _connect_pair(family: int, host: str, listener: socket.socket | None = None) -> tuple[int, int]:
    """A listener (new or given), one client connection accepted: (listen port, client port)."""
    own = listener is None
    if listener is None:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen()
    port = listener.getsockname()[1]
    client = socket.socket(family, socket.SOCK_STREAM)
    try:
        client.connect((host, port))
        server, _ = listener.accept()
        client_port = client.getsockname()[1]
        server.close()
    finally:
        client.close()
        if own:
            listener.close()
    return port, client_port


def _net(events: list[Event], action: str, dst_port: int) -> list[dict[str, Any]]:
    return [
        e["net"]
        for e in events
        if e["kind"] == "net" and e["net"]["action"] == action and e["net"]["dst_port"] == dst_port
    ]


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_tcp_connect_and_accept(family: int, host: str) -> None:
    with run_sensor(BccNetSensor(), stop_timeout=1.5) as running:
        port, client_port = _connect_pair(family, host)
        both = running.wait_until(
            lambda ev: _net(ev, "connect", port) and _net(ev, "accept", port), 2.0
        )
        assert both, f"no connect and accept events for port {port}: {running.events}"
    me = os.path.realpath(f"/proc/{os.getpid()}/exe")
    connects = _net(running.events, "connect", port)
    accepts = _net(running.events, "accept", port)
    assert connects == [
        {
            "action": "connect",
            "proto": "tcp",
            "src_ip": host,
            "src_port": client_port,
            "dst_ip": host,
            "dst_port": port,
            "pid": os.getpid(),
            "exe": me,
        }
    ]
    assert accepts == [
        {
            "action": "accept",
            "proto": "tcp",
            "src_ip": host,
            "src_port": client_port,
            "dst_ip": host,
            "dst_port": port,
            "pid": os.getpid(),
            "exe": me,
        }
    ]
    for e in running.events:
        assert contract_errors(e, running.sensor) == []


def test_accept_on_a_listener_older_than_the_sensor() -> None:
    """The listen(2) happened before the BPF program: the pid comes from /proc."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        with run_sensor(BccNetSensor(), stop_timeout=1.5) as running:
            port, client_port = _connect_pair(socket.AF_INET, "127.0.0.1", listener)
            accepts = running.wait_until(lambda ev: _net(ev, "accept", port), 2.0)
    finally:
        listener.close()
    assert len(accepts) == 1
    assert accepts[0]["pid"] == os.getpid()
    assert accepts[0]["src_port"] == client_port


def test_net_record_to_event() -> None:
    mapped = b"\0" * 10 + b"\xff\xff" + bytes([192, 0, 2, 7])
    remote = bytes.fromhex("20010db8000000000000000000000001")
    raw = struct.pack(
        "<3I4H I Q 16s 16s 16s",
        K_ACCEPT,
        321,
        0,
        socket.AF_INET6,
        443,  # local port
        51000,  # remote port
        0,
        0,
        99,
        mapped,
        remote,
        b"nginx",
    )
    rec = decode_net(raw)
    assert rec is not None
    assert (rec.local_ip, rec.remote_ip, rec.comm) == ("192.0.2.7", "2001:db8::1", "nginx")
    event = net_event(rec, ts="2026-12-03T08:00:00.000000Z", pid=321, exe="/usr/sbin/nginx")
    assert event["net"] == {
        "action": "accept",
        "proto": "tcp",
        "src_ip": "2001:db8::1",
        "src_port": 51000,
        "dst_ip": "192.0.2.7",
        "dst_port": 443,
        "pid": 321,
        "exe": "/usr/sbin/nginx",
    }
    raw4 = struct.pack(
        "<3I4H I Q 16s 16s 16s",
        K_CONNECT,
        0,
        0,
        socket.AF_INET,
        40000,
        53,
        0,
        0,
        1,
        bytes([10, 0, 0, 1]) + b"\0" * 12,
        bytes([10, 0, 0, 53]) + b"\0" * 12,
        b"",
    )
    rec4 = decode_net(raw4)
    assert rec4 is not None
    assert net_event(rec4, ts="2026-12-03T08:00:00.000000Z", pid=None, exe=None)["net"] == {
        "action": "connect",
        "proto": "tcp",
        "src_ip": "10.0.0.1",
        "src_port": 40000,
        "dst_ip": "10.0.0.53",
        "dst_port": 53,
    }


# -- xdp-flows ------------------------------------------------------------------------------


def test_xdp_counts_udp_packets_of_a_flow(veth_netns: dict[str, str]) -> None:
    n, payload, sport, dport = 25, 64, 40001, 40002
    sensor = XdpFlowsSensor({"interface": veth_netns["root_if"], "interval_s": 0.5})
    with run_sensor(sensor, stop_timeout=1.5) as running:
        send = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(({veth_netns['ns_ip']!r}, {sport}))\n"
            f"for _ in range({n}):\n"
            f"    s.sendto(b'x' * {payload}, ({veth_netns['root_ip']!r}, {dport}))\n"
        )
        sh("ip", "netns", "exec", veth_netns["ns"], "python3", "-c", send)

        def flows(events: list[Event]) -> list[dict[str, Any]]:
            return [
                e["net"]
                for e in events
                if e["net"]["src_ip"] == veth_netns["ns_ip"]
                and e["net"]["src_port"] == sport
                and e["net"]["dst_port"] == dport
            ]

        # the flow may straddle two intervals: wait until all n packets are reported
        running.wait_until(lambda ev: sum(f["packets"] for f in flows(ev)) >= n, 3.0)
    found = flows(running.events)
    assert found, f"no flow event: {running.events}"
    assert sum(f["packets"] for f in found) == n
    # Ethernet 14 + IPv4 20 + UDP 8 + payload, no FCS
    assert sum(f["bytes_in"] for f in found) == n * (14 + 20 + 8 + payload)
    for f in found:
        assert f == {
            "action": "flow",
            "proto": "udp",
            "src_ip": veth_netns["ns_ip"],
            "src_port": sport,
            "dst_ip": veth_netns["root_ip"],
            "dst_port": dport,
            "packets": f["packets"],
            "bytes_in": f["packets"] * (14 + 20 + 8 + payload),
        }
    for e in running.events:
        assert contract_errors(e, sensor) == []
    assert sensor.counters.get("lost", 0) == 0
    # stop() detached the program from the interface
    link = sh("ip", "-d", "link", "show", veth_netns["root_if"])
    assert "xdp" not in link.split("\n", 1)[0]


def test_xdp_reports_a_full_flow_map_as_lost(veth_netns: dict[str, str]) -> None:
    n = 6
    sensor = XdpFlowsSensor({"interface": veth_netns["root_if"], "interval_s": 60, "max_flows": 2})
    with run_sensor(sensor, stop_timeout=1.5):
        send = (
            "import socket\n"
            f"for port in range(41000, 41000 + {n}):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    s.sendto(b'y' * 10, ({veth_netns['root_ip']!r}, port))\n"
        )
        sh("ip", "netns", "exec", veth_netns["ns"], "python3", "-c", send)
        time.sleep(0.2)
    # stop() drained the partial interval: two flows fit, the other packets were counted lost
    assert sensor.counters.get("flows") == 2
    assert sensor.counters.get("lost") == n - 2


def test_flow_record_to_event() -> None:
    event = flow_event(
        family=6,
        proto=socket.IPPROTO_TCP,
        src=bytes.fromhex("fe800000000000000000000000000001"),
        dst=bytes.fromhex("fe800000000000000000000000000002"),
        sport=22,
        dport=50000,
        packets=3,
        nbytes=300,
        ts="2026-12-03T08:00:00.000000Z",
    )
    assert event["net"] == {
        "action": "flow",
        "proto": "tcp",
        "src_ip": "fe80::1",
        "src_port": 22,
        "dst_ip": "fe80::2",
        "dst_port": 50000,
        "packets": 3,
        "bytes_in": 300,
    }
    assert contract_errors(event, XdpFlowsSensor({"interface": "lo"})) == []
