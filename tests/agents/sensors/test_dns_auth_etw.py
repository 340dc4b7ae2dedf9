"""The dns, auth and etw sensors: real packets on lo, a real followed log file, recorded ETW.

* dns: a small UDP DNS resolver runs in a thread on 127.0.0.1 (port 53 when free, else a free
  port given to the sensor's `ports`); the real DnsSensor captures on `lo` from an AF_PACKET
  socket while the test sends hand-built queries with plain UDP sockets. Needs root or
  CAP_NET_RAW (a failure otherwise: CI runs as root).
* auth: `parse_line` over a table of real-looking syslog lines; the sensor following a temp
  file across appends, a rename rotation and a truncation; the journal source against a stand-in
  journalctl script.
* etw: every record of agents/sensors/fixtures/etw/sample.json through `normalize`, with the
  values asserted, and the same file replayed by EtwSensor(fixtures=...).events().

Every event produced is validated against contracts/event.schema.json once wrapped the way
the agent wraps it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import stat
import struct
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.sensors import create
from agents.sensors.auth import AuthSensor, parse_journal_entry, parse_line
from agents.sensors.base import SensorUnavailable, utc_now
from agents.sensors.dns import (
    DnsFormatError,
    DnsSensor,
    attach_bpf,
    bpf_program,
    parse_dns,
    parse_frame,
    read_name,
)
from agents.sensors.etw import (
    EtwSensor,
    etw_ip,
    etw_port,
    filetime_to_rfc3339,
    load_fixtures,
    normalize,
    parse_query_results,
    replay_fixtures,
    windows_path,
)
from sentinel.contracts import validate
from tests.agents.sensors.helpers import running

FIXTURE = Path(__file__).resolve().parents[3] / "agents/sensors/fixtures/etw/sample.json"


def assert_valid(partial: dict[str, Any]) -> dict[str, Any]:
    full = {
        "schema": "sentinel.event/1",
        "id": "x",
        "ts": partial.get("ts", utc_now()),
        "host": {"id": "h"},
        **partial,
    }
    validate("event", full)
    return full


# =============================================================================================
# DNS
# =============================================================================================


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def build_query(txid: int, name: str, qtype: int = 1) -> bytes:
    return (
        struct.pack("!6H", txid, 0x0100, 1, 0, 0, 0)
        + encode_name(name)
        + struct.pack("!HH", qtype, 1)
    )


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 60) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def build_response(query: bytes, rcode: int, answers: list[bytes]) -> bytes:
    txid, flags = struct.unpack_from("!HH", query)
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    flags = 0x8000 | (flags & 0x0100) | 0x0080 | rcode  # QR, RD copied, RA
    return struct.pack("!6H", txid, flags, 1, len(answers), 0, 0) + question + b"".join(answers)


def resolve(query: bytes) -> bytes | None:
    """The test resolver: *.sentinel.test A -> 192.0.2.N, a CNAME and a TXT, else NXDOMAIN."""
    try:
        _txid, flags, qd = struct.unpack_from("!3H", query)
        if flags & 0x8000 or qd != 1:
            return None
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
            pos += query[pos] + 1
        qtype = struct.unpack_from("!H", query, pos + 1)[0]
    except (struct.error, IndexError, UnicodeDecodeError):
        return None
    name = ".".join(labels).lower()
    to_q = b"\xc0\x0c"  # a compression pointer to the question name
    if not name.endswith(".sentinel.test"):
        return build_response(query, 3, [])
    if qtype == 16 and name == "txt.sentinel.test":
        return build_response(query, 0, [rr(to_q, 16, b"\x05hello\x06 world")])
    if qtype != 1:
        return build_response(query, 0, [])
    if name == "alias.sentinel.test":
        # CNAME www7.<pointer to ".sentinel.test" in the question>, then its A record
        suffix = 12 + 1 + len("alias")
        target = b"\x04www7" + struct.pack("!H", 0xC000 | suffix)
        cname = rr(to_q, 5, target)
        # the A record's owner points at the CNAME's target name inside the answer section
        a_owner = struct.pack("!H", 0xC000 | (len(query) + 10 + 2))
        return build_response(query, 0, [cname, rr(a_owner, 1, bytes([192, 0, 2, 7]))])
    digits = "".join(ch for ch in labels[0] if ch.isdigit()) or "1"
    return build_response(query, 0, [rr(to_q, 1, bytes([192, 0, 2, int(digits) % 250 + 1]))])


class Resolver:
    """A UDP DNS server thread on `host` (port 53 when free)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, 53))
        except OSError:
            self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = resolve(data)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ask(
    server: tuple[str, int], payload: bytes, keep: list[socket.socket], family: int = socket.AF_INET
) -> bytes:
    """Send one query from a fresh socket and return the reply; the socket stays open (in
    `keep`) because the sensor finds the querying process through the socket's inode, which
    is gone once a short-lived client has closed it."""
    client = socket.socket(family, socket.SOCK_DGRAM)
    keep.append(client)
    client.settimeout(3)
    client.sendto(payload, server)
    return client.recv(4096)


def _require_raw() -> None:
    missing = DnsSensor({"interface": "lo"}).check()
    assert not missing, f"the dns sensor cannot run here: {missing}"


needs_raw = pytest.mark.usefixtures("raw_capture")


@pytest.fixture
def raw_capture() -> None:
    """The dns tests need root or CAP_NET_RAW (CI runs as root): a failure, not a skip."""
    _require_raw()


SELF_EXE = os.readlink("/proc/self/exe") if os.path.exists("/proc/self/exe") else None


def test_parse_dns_response_with_compression_and_record_types() -> None:
    query = build_query(0xBEEF, "Mail.Example.COM", 15)
    q_ptr = b"\xc0\x0c"
    suffix = struct.pack("!H", 0xC000 | (12 + 5))  # -> "Example.COM"
    answers = [
        rr(q_ptr, 15, struct.pack("!H", 10) + b"\x02mx" + suffix),
        rr(q_ptr, 5, b"\x04real" + suffix),
        rr(q_ptr, 1, bytes([198, 51, 100, 1])),
        rr(q_ptr, 28, socket.inet_pton(socket.AF_INET6, "2001:db8::1")),
        rr(q_ptr, 16, b"\x03v=s\x06pf1 -a"),
        rr(q_ptr, 33, struct.pack("!HHH", 0, 5, 443) + b"\x03srv" + suffix),
        rr(q_ptr, 6, b"\x00" * 22),  # SOA: not an answer string
    ]
    msg = parse_dns(build_response(query, 0, answers))
    assert (msg.txid, msg.is_response, msg.rcode, msg.qtype) == (0xBEEF, True, 0, 15)
    assert msg.qname == "Mail.Example.COM"
    assert msg.answers == [
        "mx.Example.COM",
        "real.Example.COM",
        "198.51.100.1",
        "2001:db8::1",
        "v=spf1 -a",
        "srv.Example.COM",
    ]
    assert parse_dns(query).is_response is False


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x01\x01\x00",  # shorter than a header
        struct.pack("!6H", 1, 0x0100, 0, 0, 0, 0),  # no question
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x05abc",  # label past the end
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0)
        + encode_name("a.b")
        + b"\x00\x01\x00\x01"
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x09\x01",  # rdlength past the end
        struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0)
        + encode_name("a.b")
        + b"\x00\x01\x00\x01"
        + rr(b"\xc0\x0c", 1, b"\x01\x02\x03"),  # A with 3 bytes
    ],
)
def test_parse_dns_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(DnsFormatError):
        parse_dns(payload)


def test_read_name_escapes_odd_bytes() -> None:
    assert read_name(b"\x03a.b\x02\x00\xff\x00", 0) == ("a\\.b.\\000\\255", 8)


def _frame(src: str, dst: str, sport: int, dport: int, payload: bytes, frag: int = 0) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        frag,
        64,
        17,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def test_handle_frame_counts_malformed_and_fragments_and_never_raises() -> None:
    sensor = DnsSensor({"resolve_pid": False})
    addr = ("eth0", 0x0800, 0, 1, b"")
    assert (
        sensor.handle_frame(_frame("10.0.0.2", "10.0.0.1", 40000, 53, b"junk"), addr, 0, 0) is None
    )
    assert sensor.handle_frame(b"\x00" * 10, addr, 0, 0) is None  # not even an Ethernet header
    assert (
        sensor.handle_frame(
            _frame("10.0.0.2", "10.0.0.1", 40000, 53, b"x", frag=0x2000), addr, 0, 0
        )
        is None
    )
    assert (
        sensor.handle_frame(_frame("10.0.0.2", "10.0.0.1", 40000, 80, b"junk"), addr, 0, 0) is None
    )
    assert sensor.counters["malformed"] == 2
    assert sensor.counters["fragmented"] == 1
    # a query then its response, by hand: one event, ts of the query
    query = build_query(7, "host3.sentinel.test")
    assert (
        sensor.handle_frame(_frame("10.0.0.2", "10.0.0.1", 40000, 53, query), addr, 1000.0, 1.0)
        is None
    )
    event = sensor.handle_frame(
        _frame("10.0.0.1", "10.0.0.2", 53, 40000, resolve(query) or b""), addr, 1000.5, 1.5
    )
    assert event is not None
    assert event["dns"] == {
        "query": "host3.sentinel.test",
        "qtype": "A",
        "rcode": "NOERROR",
        "answers": ["192.0.2.4"],
        "server": "10.0.0.1",
    }
    assert event["ts"] == "1970-01-01T00:16:40.000000Z"
    assert_valid(event)
    # the same response again (another link, a retransmission): not a second lookup
    again = _frame("10.0.0.1", "10.0.0.2", 53, 40000, resolve(query) or b"")
    assert sensor.handle_frame(again, addr, 1000.6, 1.6) is None
    assert sensor.counters["duplicate_responses"] == 1
    # lo delivers each packet twice; the outgoing copy is ignored
    lo_out = ("lo", 0x0800, 4, 772, b"")
    query2 = build_query(8, "host4.sentinel.test")
    assert (
        sensor.handle_frame(_frame("127.0.0.1", "127.0.0.1", 40001, 53, query2), lo_out, 0, 0)
        is None
    )
    assert sensor.counters["queries"] == 1
    # an unanswered query becomes a query-only event once timeout_s has passed
    lo_in = ("lo", 0x0800, 0, 772, b"")
    assert (
        sensor.handle_frame(_frame("127.0.0.1", "127.0.0.1", 40001, 53, query2), lo_in, 5.0, 5.0)
        is None
    )
    assert list(sensor._expire(5.0 + sensor.timeout_s - 0.1)) == []
    [lost] = list(sensor._expire(5.0 + sensor.timeout_s))
    assert lost["dns"] == {"query": "host4.sentinel.test", "qtype": "A", "server": "127.0.0.1"}


def test_parse_frame_ipv6_and_vlan() -> None:
    payload = build_query(9, "v6.sentinel.test")
    udp = struct.pack("!HHHH", 5000, 53, 8 + len(payload), 0) + payload
    hop = bytes([17, 0]) + b"\x00" * 6  # hop-by-hop header, then UDP
    ip6 = (
        struct.pack("!IHBB", 0x60000000, len(hop) + len(udp), 0, 64)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
        + socket.inet_pton(socket.AF_INET6, "2001:db8::53")
    )
    frame = b"\x00" * 12 + b"\x81\x00\x00\x07" + b"\x86\xdd" + ip6 + hop + udp
    dgram = parse_frame(frame, 1)
    assert dgram is not None
    assert (dgram.src_ip, dgram.dst_ip, dgram.src_port, dgram.dst_port) == (
        "2001:db8::2",
        "2001:db8::53",
        5000,
        53,
    )
    assert parse_dns(dgram.payload).qname == "v6.sentinel.test"
    assert parse_frame(ip6 + hop + udp, 0xFFFE) == dgram  # a raw-IP (tun) link


@needs_raw
def test_bpf_filter_keeps_only_dns_ports() -> None:
    port = free_udp_port()
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    try:
        attach_bpf(raw, bpf_program([port]))
        raw.bind(("lo", 3))
        raw.settimeout(0.3)
        other = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(3):
                tx.sendto(b"not dns", ("127.0.0.1", other))
            tx.sendto(b"dns port", ("127.0.0.1", port))
        seen = []
        with contextlib.suppress(TimeoutError):
            while True:
                frame, addr = raw.recvfrom(70000)
                seen.append(parse_frame(frame, addr[3]))
    finally:
        raw.close()
    assert seen, "nothing passed the filter"
    assert all(d is not None and port in (d.src_port, d.dst_port) for d in seen), seen


@needs_raw
def test_dns_sensor_on_loopback_pairs_queries_and_responses() -> None:
    resolver = Resolver("127.0.0.1")
    dead_port = free_udp_port()
    sensor = DnsSensor(
        {"interface": "lo", "ports": sorted({resolver.port, dead_port}), "timeout_s": 0.6}
    )
    server = ("127.0.0.1", resolver.port)
    clients: list[socket.socket] = []
    try:
        with running(sensor) as run:
            names = {
                "host1.sentinel.test": (1, 0x1001, "NOERROR", ["192.0.2.2"]),
                "host42.sentinel.test": (1, 0x1002, "NOERROR", ["192.0.2.43"]),
                "alias.sentinel.test": (1, 0x1003, "NOERROR", ["www7.sentinel.test", "192.0.2.7"]),
                "txt.sentinel.test": (16, 0x1004, "NOERROR", ["hello world"]),
                "nosuch.example.invalid": (1, 0x1005, "NXDOMAIN", []),
                "host5.sentinel.test": (28, 0x1006, "NOERROR", []),
            }
            for name, (qtype, txid, _rcode, _answers) in names.items():
                reply = ask(server, build_query(txid, name, qtype), clients)
                assert struct.unpack_from("!H", reply)[0] == txid
            # garbage to the resolver port: counted, not fatal
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                junk.sendto(b"\x12\x34garbage", server)
            # a query nobody answers: a query-only event after timeout_s
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lost:
                lost.sendto(build_query(0x2001, "lost.sentinel.test"), ("127.0.0.1", dead_port))
                run.wait_until(
                    lambda evs: any(e["dns"]["query"] == "lost.sentinel.test" for e in evs)
                )
            run.wait_until(lambda evs: len(evs) >= len(names) + 1)
            time.sleep(0.3)  # anything duplicated would arrive now
            took = run.stop()
    finally:
        resolver.close()
        for client in clients:
            client.close()

    assert took < 1.5, f"events() took {took:.2f}s to return after stop()"
    by_query: dict[str, list[dict[str, Any]]] = {}
    for event in run.events:
        assert_valid(event)
        by_query.setdefault(event["dns"]["query"], []).append(event)
    assert set(by_query) == {*names, "lost.sentinel.test"}, by_query
    qtype_names = {1: "A", 16: "TXT", 28: "AAAA"}
    for name, (qtype, _txid, rcode, answers) in names.items():
        [event] = by_query[name]  # exactly one event per query, lo's double copy ignored
        obj = event["dns"]
        assert obj["qtype"] == qtype_names[qtype]
        assert obj["rcode"] == rcode
        assert obj["answers"] == answers
        assert obj["server"] == "127.0.0.1"
        assert obj.get("pid") == os.getpid(), obj
        if SELF_EXE:
            assert obj.get("exe") == SELF_EXE
    [lost_event] = by_query["lost.sentinel.test"]
    assert lost_event["dns"] == {
        "query": "lost.sentinel.test",
        "qtype": "A",
        "server": "127.0.0.1",
        "pid": os.getpid(),
        **({"exe": SELF_EXE} if SELF_EXE else {}),
    }
    assert sensor.counters.get("malformed", 0) >= 1
    assert sensor.counters["timeouts"] == 1


@needs_raw
def test_dns_sensor_ipv6_loopback() -> None:
    try:
        resolver = Resolver("::1")
    except OSError as exc:
        raise AssertionError(f"no IPv6 loopback to test on: {exc}") from None
    sensor = DnsSensor({"interface": "lo", "ports": [resolver.port], "timeout_s": 0.5})
    clients: list[socket.socket] = []
    try:
        with running(sensor) as run:
            query = build_query(0x3001, "six9.sentinel.test")
            ask(("::1", resolver.port), query, clients, socket.AF_INET6)
            run.wait_until(lambda evs: len(evs) >= 1)
            time.sleep(0.2)
            run.stop()
    finally:
        resolver.close()
        for client in clients:
            client.close()
    [event] = run.events
    assert_valid(event)
    assert event["dns"]["query"] == "six9.sentinel.test"
    assert event["dns"]["answers"] == ["192.0.2.10"]
    assert event["dns"]["server"] == "::1"
    assert event["dns"].get("pid") == os.getpid()


def test_dns_check_and_registry() -> None:
    sensor = create("dns", {"interface": "no-such-if0"})
    assert isinstance(sensor, DnsSensor)
    problems = sensor.check()
    assert any("no-such-if0" in p for p in problems)
    if os.geteuid() != 0:
        assert any("CAP_NET_RAW" in p for p in problems)
    with pytest.raises(SensorUnavailable):
        sensor.start()


# =============================================================================================
# Auth
# =============================================================================================

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)

AUTH_LINES: list[tuple[str, dict[str, Any] | None, str | None]] = [
    (
        "Dec  3 08:00:00 web1 sshd[1234]: Accepted publickey for alice from 203.0.113.5 port 51234 ssh2: ED25519 SHA256:Xy0abc",
        {"action": "login", "user": "alice", "src_ip": "203.0.113.5", "method": "publickey"},
        "2026-12-03T08:00:00.000000Z",
    ),
    (
        "Dec 13 23:59:59 web1 sshd[1240]: Accepted password for bob from 2001:db8::7 port 40100 ssh2",
        {"action": "login", "user": "bob", "src_ip": "2001:db8::7", "method": "password"},
        "2025-12-13T23:59:59.000000Z",  # 10 days ahead of NOW: last year's line
    ),
    (
        "2026-12-03T08:00:01.123456+00:00 web1 sshd[1301]: Failed password for root from 198.51.100.23 port 50022 ssh2",
        {"action": "failure", "user": "root", "src_ip": "198.51.100.23", "method": "password"},
        "2026-12-03T08:00:01.123456Z",
    ),
    (
        "2026-12-03T10:00:02.5+02:00 web1 sshd[1302]: Failed password for invalid user oracle from ::ffff:198.51.100.24 port 50023 ssh2",
        {"action": "failure", "user": "oracle", "src_ip": "198.51.100.24", "method": "password"},
        "2026-12-03T08:00:02.500000Z",
    ),
    (
        "Dec  3 08:00:03 web1 sshd-session[1303]: Invalid user admin from 198.51.100.25 port 50024",
        {"action": "failure", "user": "admin", "src_ip": "198.51.100.25"},
        "2026-12-03T08:00:03.000000Z",
    ),
    (
        "Dec  3 08:00:04 web1 sshd[1304]: message repeated 3 times: [ Failed password for root from 198.51.100.23 port 50022 ssh2]",
        {"action": "failure", "user": "root", "src_ip": "198.51.100.23", "method": "password"},
        "2026-12-03T08:00:04.000000Z",
    ),
    (
        "Dec  3 08:10:00 web1 sshd[1234]: pam_unix(sshd:session): session closed for user alice",
        {"action": "logout", "user": "alice"},
        "2026-12-03T08:10:00.000000Z",
    ),
    (
        "Dec  3 08:10:00 web1 sshd[1234]: Disconnected from user alice 203.0.113.5 port 51234",
        {"action": "logout", "user": "alice", "src_ip": "203.0.113.5"},
        "2026-12-03T08:10:00.000000Z",
    ),
    (
        "Dec  3 08:05:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
        {"action": "sudo", "user": "alice", "method": "sudo"},
        "2026-12-03T08:05:00.000000Z",
    ),
    (
        "Dec  3 08:05:30 web1 sudo:      bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/cat /etc/shadow",
        {"action": "failure", "user": "bob", "method": "sudo"},
        "2026-12-03T08:05:30.000000Z",
    ),
    (
        "Dec  3 08:05:31 web1 sudo:  mallory : user NOT in sudoers ; TTY=pts/2 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
        {"action": "failure", "user": "mallory", "method": "sudo"},
        "2026-12-03T08:05:31.000000Z",
    ),
    (
        "Dec  3 08:05:29 web1 sudo: pam_unix(sudo:auth): authentication failure; logname=bob uid=1001 euid=0 tty=/dev/pts/1 ruser=bob rhost=  user=bob",
        {"action": "failure", "user": "bob", "method": "sudo"},
        "2026-12-03T08:05:29.000000Z",
    ),
    (
        "Dec  3 08:06:00 web1 su[2001]: pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 tty=pts/0 ruser=alice rhost=  user=root",
        {"action": "failure", "user": "root", "method": "su"},
        "2026-12-03T08:06:00.000000Z",
    ),
    (
        "Dec  3 08:06:10 web1 su[2002]: pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)",
        {"action": "login", "user": "root", "method": "su"},
        "2026-12-03T08:06:10.000000Z",
    ),
    (
        "Dec  3 08:07:00 web1 login[900]: pam_unix(login:auth): authentication failure; logname=LOGIN uid=0 euid=0 tty=/dev/tty1 ruser= rhost= user=carol",
        {"action": "failure", "user": "carol", "method": "login"},
        "2026-12-03T08:07:00.000000Z",
    ),
    (
        "Dec  3 08:07:05 web1 login[900]: FAILED LOGIN (1) on '/dev/tty1' FOR 'carol', Authentication failure",
        {"action": "failure", "user": "carol", "method": "login"},
        "2026-12-03T08:07:05.000000Z",
    ),
    (
        "Dec  3 08:07:30 web1 login[900]: pam_unix(login:session): session opened for user carol(uid=1002) by LOGIN(uid=0)",
        {"action": "login", "user": "carol", "method": "login"},
        "2026-12-03T08:07:30.000000Z",
    ),
    (
        "Dec  3 08:07:31 web1 sshd[1250]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.23  user=root",
        None,  # sshd's "Failed password" line reports it
        None,
    ),
    (
        "Dec  3 08:07:32 web1 sshd[1251]: pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)",
        None,  # the "Accepted" line reports it
        None,
    ),
    (
        "Dec  3 08:17:01 web1 CRON[3001]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
        None,
        None,
    ),
    (
        "Dec  3 08:05:00 web1 sudo: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
        None,
        None,
    ),
    ("Dec  3 08:00:00 web1 systemd-logind[600]: New session 42 of user alice.", None, None),
    (
        "Dec  3 08:00:00 web1 sshd[1234]: Received disconnect from 203.0.113.5 port 51234:11: disconnected by user",
        None,
        None,
    ),
    ("Dec  3 08:00:00 web1 kernel: [ 12.3] eth0: link up", None, None),
    ("not a syslog line at all", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("line", "expected", "ts"), AUTH_LINES)
def test_parse_line(line: str, expected: dict[str, Any] | None, ts: str | None) -> None:
    event = parse_line(line, now=NOW)
    if expected is None:
        assert event is None
        return
    assert event == {"kind": "auth", "auth": expected, "ts": ts}
    assert_valid(event)


def test_parse_line_hostname_source_is_left_out() -> None:
    event = parse_line(
        "Dec  3 08:00:00 web1 sshd[1]: Failed password for root from scanner.example.net port 22 ssh2",
        now=NOW,
    )
    assert event is not None and "src_ip" not in event["auth"]


def test_parse_journal_entry() -> None:
    event = parse_journal_entry(
        {
            "MESSAGE": "Accepted publickey for alice from 203.0.113.5 port 51234 ssh2",
            "SYSLOG_IDENTIFIER": "sshd",
            "_PID": "1234",
            "__REALTIME_TIMESTAMP": "1796284800123456",
        }
    )
    assert event == {
        "kind": "auth",
        "auth": {
            "action": "login",
            "user": "alice",
            "src_ip": "203.0.113.5",
            "method": "publickey",
        },
        "ts": "2026-12-03T08:00:00.123456Z",
    }
    raw = list(b"Invalid user eve from 198.51.100.9 port 1")
    assert parse_journal_entry({"MESSAGE": raw, "SYSLOG_IDENTIFIER": "sshd"}) == {
        "kind": "auth",
        "auth": {"action": "failure", "user": "eve", "src_ip": "198.51.100.9"},
    }
    assert (
        parse_journal_entry({"MESSAGE": "Started Session 3.", "SYSLOG_IDENTIFIER": "systemd"})
        is None
    )


def _line(n: int, user: str) -> str:
    return f"Dec  3 09:00:{n:02d} web1 sshd[{n + 100}]: Failed password for {user} from 198.51.100.{n} port 4{n:04d} ssh2\n"


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as fh:
        fh.write("".join(lines))
        fh.flush()


def test_auth_sensor_tails_file_across_rotation_and_truncation(tmp_path: Path) -> None:
    log_file = tmp_path / "auth.log"
    log_file.write_text(_line(1, "before-start"))  # there before start: not reported
    sensor = AuthSensor({"path": str(log_file), "poll_s": 0.05})
    assert sensor.check() == []
    users: list[str] = []
    with running(sensor) as run:
        _append(log_file, _line(2, "u2"), _line(3, "u3"))
        users += ["u2", "u3"]
        run.wait_until(lambda evs: len(evs) >= 2)
        # a partial line completed later is one event
        _append(log_file, _line(4, "u4")[:30])
        time.sleep(0.2)
        _append(log_file, _line(4, "u4")[30:])
        users.append("u4")
        # lines written just before rotation, then rename + a new file
        _append(log_file, _line(5, "u5"))
        os.rename(log_file, tmp_path / "auth.log.1")
        log_file.write_text(_line(6, "u6"))
        _append(log_file, _line(7, "u7"))
        users += ["u5", "u6", "u7"]
        run.wait_until(lambda evs: len(evs) >= len(users))
        # copytruncate: the file becomes shorter, then grows again
        with log_file.open("w"):
            pass
        time.sleep(0.2)
        _append(log_file, _line(8, "u8"))
        users.append("u8")
        run.wait_until(lambda evs: len(evs) >= len(users))
        _append(log_file, "Dec  3 09:01:00 web1 kernel: unrelated\n", _line(9, "u9"))
        users.append("u9")
        run.wait_until(lambda evs: len(evs) >= len(users))
        time.sleep(0.3)  # duplicates would show up now
        took = run.stop()
    assert took < 1.5
    assert [e["auth"]["user"] for e in run.events] == users
    for event in run.events:
        assert event["auth"]["action"] == "failure"
        assert_valid(event)
    assert sensor.counters["rotations"] == 1
    assert sensor.counters["truncations"] == 1


def test_auth_sensor_from_start_and_missing_file(tmp_path: Path) -> None:
    log_file = tmp_path / "secure"
    log_file.write_text(_line(1, "old1") + _line(2, "old2"))
    sensor = AuthSensor({"path": str(log_file), "from_start": True, "poll_s": 0.05})
    with running(sensor) as run:
        run.wait_until(lambda evs: len(evs) >= 2)
        run.stop()
    assert [e["auth"]["user"] for e in run.events] == ["old1", "old2"]

    later = tmp_path / "later.log"  # does not exist yet: waited for, read from its start
    sensor = AuthSensor({"path": str(later), "poll_s": 0.05})
    assert sensor.check() == []
    with running(sensor) as run:
        time.sleep(0.2)
        later.write_text(_line(3, "new3"))
        run.wait_until(lambda evs: len(evs) >= 1)
        run.stop()
    assert [e["auth"]["user"] for e in run.events] == ["new3"]

    assert "does not exist" in AuthSensor({"path": "/nonexistent-dir/x/auth.log"}).check()[0]


def test_auth_sensor_journal_source(tmp_path: Path) -> None:
    args_file = tmp_path / "args"
    script = tmp_path / "journalctl"
    entries = [
        '{"__CURSOR": "c1", "MESSAGE": "Accepted password for dave from 192.0.2.50 port 2222 ssh2", '
        '"SYSLOG_IDENTIFIER": "sshd", "_PID": "77", "__REALTIME_TIMESTAMP": "1796284800000000"}',
        '{"__CURSOR": "c2", "MESSAGE": "Started Daily Cleanup.", "SYSLOG_IDENTIFIER": "systemd"}',
        "not json",
        '{"__CURSOR": "c3", "MESSAGE": "  dave : TTY=pts/3 ; PWD=/root ; USER=root ; COMMAND=/usr/bin/id", '
        '"SYSLOG_IDENTIFIER": "sudo", "_PID": "78", "__REALTIME_TIMESTAMP": "1796284801000000"}',
    ]
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {args_file}\n'
        + "".join(f"printf '%s\\n' '{e}'\n" for e in entries)
        + "exec sleep 30\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    sensor = AuthSensor({"source": "journal", "journalctl": str(script), "poll_s": 0.05})
    assert sensor.check() == []
    with running(sensor) as run:
        run.wait_until(lambda evs: len(evs) >= 2)
        proc = sensor._proc
        took = run.stop()
    assert took < 1.5
    assert proc is not None and proc.poll() is not None  # journalctl was ended
    assert [(e["auth"]["action"], e["auth"]["user"], e["ts"]) for e in run.events] == [
        ("login", "dave", "2026-12-03T08:00:00.000000Z"),
        ("sudo", "dave", "2026-12-03T08:00:01.000000Z"),
    ]
    for event in run.events:
        assert_valid(event)
    args = args_file.read_text().split()
    assert args[:4] == ["-f", "-o", "json", "--no-pager"]
    assert "SYSLOG_IDENTIFIER=sshd" in args and "-n" in args

    missing = AuthSensor({"source": "journal", "journalctl": str(tmp_path / "nope")}).check()
    assert missing and "journalctl" in missing[0]


# =============================================================================================
# ETW
# =============================================================================================

POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
CMD = r"C:\Windows\System32\cmd.exe"


def test_fixture_has_the_required_coverage() -> None:
    records = load_fixtures(FIXTURE)
    assert len(records) >= 12
    ids = [r[0] for r in records]
    for needed in (1, 2, 12, 28, 15, 3008):
        assert needed in ids


def test_every_fixture_record_normalizes_to_a_valid_event() -> None:
    records = load_fixtures(FIXTURE)
    events = [normalize(r) for r in records]
    ignored = [records[i][0] for i, e in enumerate(events) if e is None]
    assert ignored == [3, 13]  # ThreadStart and TCP disconnect: not ours
    for event in events:
        if event is not None:
            assert_valid(event)
            assert event["ts"].startswith("2026-12-03T08:00:")

    by_key = {}
    for event in events:
        if event is None:
            continue
        obj = event[event["kind"]]
        by_key[
            (
                event["kind"],
                obj.get("action"),
                obj.get("pid"),
                obj.get("query"),
                obj.get("dst_port"),
            )
        ] = obj
    explorer, cmd, ps = events[0], events[1], events[2]
    assert explorer == {
        "kind": "proc",
        "proc": {
            "action": "exec",
            "pid": 3000,
            "ppid": 2950,
            "exe": r"C:\Windows\explorer.exe",
            "cmdline": r"C:\Windows\Explorer.EXE",
        },
        "ts": "2026-12-03T08:00:00.000123Z",
    }
    assert cmd is not None and cmd["proc"] == {
        "action": "exec",
        "pid": 4120,
        "ppid": 3000,
        "exe": CMD,
        "cmdline": '"C:\\Windows\\system32\\cmd.exe" ',
    }
    assert ps is not None
    assert ps["proc"]["pid"] == 5232 and ps["proc"]["ppid"] == 4120
    assert ps["proc"]["exe"] == POWERSHELL
    assert ps["proc"]["cmdline"].startswith(
        "powershell.exe -NoProfile -WindowStyle Hidden -enc SQBFAFgA"
    )
    assert ps["ts"] == "2026-12-03T08:00:04.200123Z"

    assert events[4] == {
        "kind": "dns",
        "dns": {"query": "update.contoso-cdn.example", "qtype": "A", "pid": 5232},
        "ts": "2026-12-03T08:00:04.600123Z",
    }
    assert events[5] is not None and events[5]["dns"] == {
        "query": "update.contoso-cdn.example",
        "qtype": "A",
        "rcode": "NOERROR",
        "answers": ["edge.contoso-cdn.example", "203.0.113.10", "203.0.113.11"],
        "pid": 5232,
    }
    net = [e["net"] for e in events if e is not None and e["kind"] == "net"]
    assert net == [
        {
            "action": "connect",
            "proto": "tcp",
            "src_ip": "10.0.0.15",
            "src_port": 49712,
            "dst_ip": "203.0.113.10",
            "dst_port": 443,
            "pid": 5232,
        },
        # the integer-shaped recording: little-endian in_addr, host-order ports
        {
            "action": "connect",
            "proto": "tcp",
            "src_ip": "10.0.0.15",
            "src_port": 49715,
            "dst_ip": "198.51.100.20",
            "dst_port": 8443,
            "pid": 1288,
        },
        {
            "action": "connect",
            "proto": "tcp",
            "src_ip": "2001:db8:1::15",
            "src_port": 49713,
            "dst_ip": "2001:db8:85a3::8a2e:370:7334",
            "dst_port": 443,
            "pid": 5232,
        },
        {
            "action": "accept",
            "proto": "tcp",
            "src_ip": "198.51.100.77",
            "src_port": 50122,
            "dst_ip": "10.0.0.15",
            "dst_port": 3389,
            "pid": 1072,
        },
        {
            "action": "flow",
            "proto": "udp",
            "src_ip": "10.0.0.15",
            "src_port": 61234,
            "dst_ip": "10.0.0.1",
            "dst_port": 53,
            "pid": 5232,
            "bytes_out": 48,
            "packets": 1,
        },
    ]
    dns = [e["dns"] for e in events if e is not None and e["kind"] == "dns"]
    assert dns[2] == {
        "query": "nonexistent-c2.contoso.example",
        "qtype": "A",
        "rcode": "NXDOMAIN",
        "answers": [],
        "pid": 4120,
    }
    assert dns[3] == {
        "query": "www.example.org",
        "qtype": "AAAA",
        "rcode": "NOERROR",
        "answers": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        "pid": 3000,
    }
    exits = [
        e["proc"]
        for e in events
        if e is not None and e["kind"] == "proc" and e["proc"]["action"] == "exit"
    ]
    assert exits == [
        {"action": "exit", "pid": 5232, "exe": "powershell.exe"},
        {"action": "exit", "pid": 4120, "exe": "cmd.exe"},
    ]


def test_replay_enriches_and_sensor_yields_the_same_events() -> None:
    replayed = list(replay_fixtures(FIXTURE))
    assert len(replayed) == 14
    for event in replayed:
        assert_valid(event)
    ps = next(e["proc"] for e in replayed if e["kind"] == "proc" and e["proc"]["pid"] == 5232)
    assert ps["parent_exe"] == CMD
    exits = [
        e["proc"]["exe"] for e in replayed if e["kind"] == "proc" and e["proc"]["action"] == "exit"
    ]
    assert exits == [POWERSHELL, CMD]
    first_connect = next(e["net"] for e in replayed if e["kind"] == "net")
    assert first_connect["exe"] == POWERSHELL

    sensor = create("etw", {"fixtures": str(FIXTURE), "dns_queries": True, "udp": True})
    assert isinstance(sensor, EtwSensor)
    assert sensor.check() == []
    sensor.start()
    assert list(sensor.events()) == replayed
    assert sensor.counters["ignored"] == 2

    # the defaults leave out DNS-Client 3006 and UDP datagrams
    default = EtwSensor({"fixtures": str(FIXTURE)})
    default.start()
    got = list(default.events())
    expected = [
        e
        for e in replayed
        if not (e["kind"] == "dns" and "rcode" not in e["dns"])
        and not (e["kind"] == "net" and e["net"]["proto"] == "udp")
    ]
    assert got == expected and len(got) == 12


def test_etw_conversions() -> None:
    assert filetime_to_rfc3339(134091936000000000) == "2025-12-03T00:00:00.000000Z"
    assert filetime_to_rfc3339("134091936000001234") == "2025-12-03T00:00:00.000123Z"
    assert filetime_to_rfc3339("2026-12-03T08:00:00.5+00:00") == "2026-12-03T08:00:00.500000Z"
    assert filetime_to_rfc3339(0) is None and filetime_to_rfc3339("garbage") is None
    assert etw_ip(0x0100000A) == "10.0.0.1"
    assert etw_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert etw_ip("fe80::1%12") == "fe80::1"
    assert etw_ip("nope") is None and etw_ip(None) is None
    assert etw_port("443") == 443 and etw_port(0xBB01, "network") == 443 and etw_port(70000) is None
    assert (
        windows_path(r"\Device\HarddiskVolume2\Tools\x.exe", {r"\Device\HarddiskVolume2": "D:"})
        == r"D:\Tools\x.exe"
    )
    assert windows_path(r"\Device\HarddiskVolume4\Windows\notepad.exe") == r"C:\Windows\notepad.exe"
    assert windows_path(r"\SystemRoot\System32\smss.exe") == r"C:\Windows\System32\smss.exe"
    assert (
        windows_path(r"\??\C:\Windows\system32\conhost.exe") == r"C:\Windows\system32\conhost.exe"
    )
    assert parse_query_results("type:  5 a.example.;::ffff:1.2.3.4;2001:db8::9;junk;") == [
        "a.example",
        "1.2.3.4",
        "2001:db8::9",
    ]


def test_normalize_ignores_what_it_cannot_map() -> None:
    header = {
        "ProviderId": "{1C95126E-7EEA-49A9-A3FE-A378B03DDB4D}",
        "ProcessId": 1,
        "TimeStamp": 0,
    }
    assert (
        normalize((3008, {"EventHeader": header, "QueryName": "x.example", "QueryType": 43}))
        is None
    )
    assert normalize((3008, {"EventHeader": header, "QueryType": 1})) is None
    assert (
        normalize((1, {"EventHeader": {"ProviderId": "{00000000-0000-0000-0000-000000000001}"}}))
        is None
    )
    assert normalize("not a record") is None
    assert (
        normalize(
            (
                1,
                {
                    "EventHeader": {"ProviderId": "{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}"},
                    "ProcessID": "x",
                    "ImageName": "a.exe",
                },
            )
        )
        is None
    )
    # a plain dict: the id comes from the descriptor; no timestamp -> no ts
    event = normalize(
        {
            "EventHeader": {**header, "EventDescriptor": {"Id": 3008}},
            "QueryName": "y.example",
            "QueryType": 1,
            "QueryStatus": 1460,
            "QueryResults": "",
        }
    )
    assert event == {
        "kind": "dns",
        "dns": {"query": "y.example", "qtype": "A", "answers": [], "pid": 1},
    }


def test_etw_check_names_what_the_host_lacks() -> None:
    sensor = EtwSensor({})
    problems = sensor.check()
    if sys.platform == "win32":  # a live session needs only pywintrace (and Administrator)
        assert not any("ETW needs Windows" in p for p in problems), problems
    else:
        [problem] = problems
        assert "Windows" in problem and "pywintrace" in problem
        with pytest.raises(SensorUnavailable, match="Windows"):
            sensor.start()
    assert "does not exist" in EtwSensor({"fixtures": "/nonexistent.json"}).check()[0]


def test_live_callback_queue_drops_when_full() -> None:
    # the live callback path: records queued by pywintrace's thread are mapped by events()
    sensor = EtwSensor({"queue_size": 1})
    sensor._on_record((1, {}))
    sensor._on_record((1, {}))
    assert sensor.counters["dropped"] == 1
    assert isinstance(sensor._queue, queue.Queue)
