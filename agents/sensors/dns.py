"""DNS sensor: one `dns` event per answered query, seen on the wire from an AF_PACKET socket.

Why on the wire: every resolver library (glibc, musl, Go, Java, a malware's own stub) ends up
sending UDP datagrams to port 53, so a packet socket sees them all without hooking processes.

How it works:

* An `AF_PACKET`/`SOCK_RAW` socket receives every frame on one interface (option `interface`)
  or on all of them (the default). A classic BPF program attached with `SO_ATTACH_FILTER`
  keeps only UDP datagrams from or to the configured ports (option `ports`, default `[53]`) so
  the kernel drops the rest; it reads the IP header through the link-independent network-header
  offset (`SKF_NET_OFF`), so it works on Ethernet, loopback and raw-IP (tun) links alike. When
  the kernel refuses the program the sensor falls back to filtering in Python (counter
  `bpf_fallback`). Python checks the ports again in any case.
* Frames are parsed by hand: Ethernet (with 802.1Q/802.1ad tags) or raw IP, IPv4 (fragments
  other than a whole datagram are skipped) or IPv6 (hop-by-hop, routing, destination-options
  and fragment headers are walked), UDP, then the DNS message: header, the first question
  (names with compression pointers, loops guarded), and the answer section. Answers become
  strings: A/AAAA addresses, CNAME/PTR/NS/MX/SRV target names (MX and SRV without their
  preference/priority numbers, so an answer list can be matched against a list of names), and
  TXT records with their character-strings concatenated.
* Queries (QR=0) are remembered by (client ip, client port, transaction id). A response (QR=1)
  to the same key yields one event: `query`, `qtype`, `rcode`, `answers`, `server` (the
  responder's address), and `ts` of the query. A response whose query was not seen still
  yields an event (stamped with its own time). A query left unanswered for `timeout_s`
  (default 2) yields a query-only event: no `rcode`, no `answers`, `server` = where it was
  sent.
* On `lo` every packet is delivered twice (once as PACKET_OUTGOING, once as incoming); the
  outgoing copy is ignored there. On other links outgoing frames are the local queries and
  are kept.
* With `resolve_pid` (default True), the querying socket is found when the query is seen:
  client port -> `/proc/net/udp{,6}` inode -> the `/proc/<pid>/fd` link `socket:[inode]`.
  The inode -> pid map is cached and processes that recently owned DNS sockets are searched
  first, so a resolver-heavy process costs one directory listing, not a /proc walk.

Limits: DNS over TCP, DoT and DoH are not seen; fragmented UDP responses (big EDNS answers)
are counted as `fragmented` and only their query is reported; EDNS extended rcodes are
ignored. Query types and rcodes outside the contract's enums are counted
(`unsupported_qtype`) and skipped, or reported without `rcode` (`unmapped_rcode`).

The owner lookup races the client: a process that has closed its socket by the time the
sensor reads the query (a busy host, a client that gave up) is reported without pid/exe
(counter `pid_unresolved`). The same response seen again within `timeout_s` (one datagram on
a bridge and on a veth) is dropped (`duplicate_responses`), but with the default of all
interfaces on a host that NATs (containers) a lookup is reported once per address it crosses;
set `interface` there.

Counters: packets, queries, responses, timeouts, malformed, fragmented, unsupported_qtype,
unmapped_rcode, unmatched_responses, duplicate_responses, pid_resolved, pid_unresolved,
bpf_fallback, pending_overflow (more than `max_pending` queries in flight; the oldest are
forgotten), pending_dropped (queries still in flight at stop), errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.sensors.base import Event, Sensor, SensorUnavailable, utc_from_epoch
from sentinel.logs import get_logger

log = get_logger(__name__)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
# Links whose frames start with the IP header (tun, WireGuard, GRE, SIT, IPIP, ...).
RAW_IP_LINKS = frozenset({0xFFFE, 0xFFFF, 768, 776, 778, 823})
CAP_NET_RAW = 13

QTYPES: dict[int, str] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    10: "NULL",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}
RCODES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}
_NAME_TYPES = {2, 5, 12}  # NS, CNAME, PTR: the RDATA is one domain name


class DnsFormatError(ValueError):
    """The bytes are not a well-formed DNS message (or not the part of it we need)."""


# ---------------------------------------------------------------------------------------------
# DNS wire format
# ---------------------------------------------------------------------------------------------


@dataclass
class DnsMessage:
    txid: int
    is_response: bool
    opcode: int
    rcode: int
    qname: str
    qtype: int
    answers: list[str] = field(default_factory=list)


def _label_text(raw: bytes) -> str:
    """A label in presentation form: printable ASCII as is, '.' and '\\' escaped, else \\DDD."""
    out = []
    for b in raw:
        if b in (0x2E, 0x5C):
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def read_name(msg: bytes, offset: int) -> tuple[str, int]:
    """The domain name at `offset` (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end: int | None = None  # where the name ends in the original position (before a jump)
    jumps = 0
    total = 0
    pos = offset
    while True:
        if pos >= len(msg):
            raise DnsFormatError("name runs past the end of the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsFormatError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if end is None:
                end = pos + 2
            jumps += 1
            if jumps > 64 or target >= len(msg):
                raise DnsFormatError("compression pointer loop or out of range")
            pos = target
            continue
        if length & 0xC0:
            raise DnsFormatError(f"unsupported label type 0x{length:02x}")
        pos += 1
        if length == 0:
            break
        if pos + length > len(msg):
            raise DnsFormatError("label runs past the end of the message")
        labels.append(_label_text(msg[pos : pos + length]))
        total += length + 1
        if total > 255:
            raise DnsFormatError("name longer than 255 octets")
        pos += length
    return (".".join(labels) if labels else "."), (end if end is not None else pos)


def _rdata_text(msg: bytes, rtype: int, start: int, rdlength: int) -> str | None:
    rdata = msg[start : start + rdlength]
    if rtype == 1:
        if rdlength != 4:
            raise DnsFormatError("A record with a bad length")
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == 28:
        if rdlength != 16:
            raise DnsFormatError("AAAA record with a bad length")
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype in _NAME_TYPES:
        return read_name(msg, start)[0]
    if rtype == 15:  # MX: preference, exchange
        if rdlength < 3:
            raise DnsFormatError("MX record too short")
        return read_name(msg, start + 2)[0]
    if rtype == 33:  # SRV: priority, weight, port, target
        if rdlength < 7:
            raise DnsFormatError("SRV record too short")
        return read_name(msg, start + 6)[0]
    if rtype == 16:  # TXT: one or more <length><bytes> character-strings
        parts = []
        pos = 0
        while pos < len(rdata):
            n = rdata[pos]
            if pos + 1 + n > len(rdata):
                raise DnsFormatError("TXT string runs past its record")
            parts.append(rdata[pos + 1 : pos + 1 + n].decode("utf-8", "replace"))
            pos += 1 + n
        return "".join(parts)
    return None


def parse_dns(msg: bytes) -> DnsMessage:
    """Header, first question and answer section of a DNS message; raises DnsFormatError."""
    if len(msg) < 12:
        raise DnsFormatError("shorter than a DNS header")
    txid, flags, qdcount, ancount, _nscount, _arcount = struct.unpack_from("!6H", msg)
    if qdcount < 1:
        raise DnsFormatError("no question")
    qname, pos = read_name(msg, 12)
    if pos + 4 > len(msg):
        raise DnsFormatError("truncated question")
    qtype, _qclass = struct.unpack_from("!HH", msg, pos)
    pos += 4
    for _ in range(qdcount - 1):  # rare; skip the other questions
        _, pos = read_name(msg, pos)
        pos += 4
    message = DnsMessage(
        txid=txid,
        is_response=bool(flags & 0x8000),
        opcode=(flags >> 11) & 0xF,
        rcode=flags & 0xF,
        qname=qname.rstrip(".") or ".",
        qtype=qtype,
    )
    if not message.is_response:
        return message
    for _ in range(ancount):
        _, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsFormatError("truncated resource record")
        rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        if pos + rdlength > len(msg):
            raise DnsFormatError("resource record data runs past the end")
        text = _rdata_text(msg, rtype, pos, rdlength)
        if text is not None:
            message.answers.append(text.rstrip(".") if rtype not in (1, 16, 28) else text)
        pos += rdlength
    return message


# ---------------------------------------------------------------------------------------------
# Link, IP and UDP layers
# ---------------------------------------------------------------------------------------------


class Fragmented(ValueError):
    """The datagram is an IP fragment; its UDP payload is not whole."""


@dataclass(frozen=True)
class Datagram:
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    payload: bytes


def _udp(packet: bytes, off: int, src: str, dst: str, end: int) -> Datagram | None:
    if off + 8 > end:
        raise DnsFormatError("truncated UDP header")
    sport, dport, length, _csum = struct.unpack_from("!HHHH", packet, off)
    if length < 8:
        raise DnsFormatError("bad UDP length")
    stop = min(off + length, end)
    return Datagram(src, dst, sport, dport, packet[off + 8 : stop])


def parse_ip(packet: bytes, off: int = 0) -> Datagram | None:
    """The UDP datagram in the IPv4/IPv6 packet at `off`; None when it is not UDP."""
    if off >= len(packet):
        raise DnsFormatError("empty IP packet")
    version = packet[off] >> 4
    if version == 4:
        if off + 20 > len(packet):
            raise DnsFormatError("truncated IPv4 header")
        ihl = (packet[off] & 0xF) * 4
        total = struct.unpack_from("!H", packet, off + 2)[0]
        frag = struct.unpack_from("!H", packet, off + 6)[0]
        proto = packet[off + 9]
        if ihl < 20 or off + ihl > len(packet):
            raise DnsFormatError("bad IPv4 header length")
        if proto != 17:
            return None
        if frag & 0x3FFF:  # MF set or a non-zero offset
            raise Fragmented("IPv4 fragment")
        src = socket.inet_ntop(socket.AF_INET, packet[off + 12 : off + 16])
        dst = socket.inet_ntop(socket.AF_INET, packet[off + 16 : off + 20])
        end = min(len(packet), off + total) if total else len(packet)
        return _udp(packet, off + ihl, src, dst, end)
    if version == 6:
        if off + 40 > len(packet):
            raise DnsFormatError("truncated IPv6 header")
        plen = struct.unpack_from("!H", packet, off + 4)[0]
        nxt = packet[off + 6]
        src = socket.inet_ntop(socket.AF_INET6, packet[off + 8 : off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, packet[off + 24 : off + 40])
        end = min(len(packet), off + 40 + plen) if plen else len(packet)
        pos = off + 40
        for _ in range(8):  # extension headers
            if nxt == 17:
                return _udp(packet, pos, src, dst, end)
            if nxt in (0, 43, 60):
                if pos + 2 > end:
                    raise DnsFormatError("truncated IPv6 extension header")
                nxt, hlen = packet[pos], (packet[pos + 1] + 1) * 8
                pos += hlen
                continue
            if nxt == 44:
                if pos + 8 > end:
                    raise DnsFormatError("truncated IPv6 fragment header")
                frag = struct.unpack_from("!H", packet, pos + 2)[0]
                if frag & 0xFFF9:  # an offset or more fragments follow
                    raise Fragmented("IPv6 fragment")
                nxt = packet[pos]
                pos += 8
                continue
            return None
        return None
    raise DnsFormatError(f"IP version {version}")


def parse_frame(frame: bytes, hatype: int) -> Datagram | None:
    """The UDP datagram in a link-layer frame of ARPHRD type `hatype`; None when not UDP/IP."""
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        if len(frame) < 14:
            raise DnsFormatError("truncated Ethernet header")
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        off = 14
        while ethertype in (ETH_P_8021Q, ETH_P_8021AD):
            if off + 4 > len(frame):
                raise DnsFormatError("truncated VLAN tag")
            ethertype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
        if ethertype not in (ETH_P_IP, ETH_P_IPV6):
            return None
        return parse_ip(frame, off)
    if hatype in RAW_IP_LINKS:
        return parse_ip(frame, 0)
    return None


# ---------------------------------------------------------------------------------------------
# Classic BPF
# ---------------------------------------------------------------------------------------------

SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_NET_OFF = -0x100000
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_LD_H_IND = 0x48
_LDX_B_MSH = 0xB1
_JEQ_K, _JSET_K = 0x15, 0x45
_RET_K = 0x06


def bpf_program(ports: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting UDP datagrams with either port in `ports`.

    Offsets are relative to the network header (SKF_NET_OFF), so it does not care about the
    link layer. IPv6 with extension headers is passed up to Python, which walks them.
    """
    plist = sorted({int(p) for p in ports})
    if not plist or len(plist) > 40:
        raise ValueError("the BPF filter takes between 1 and 40 ports")

    def net(offset: int) -> int:
        return (SKF_NET_OFF + offset) & 0xFFFFFFFF

    # (label, code, jump-if-true, jump-if-false, k); jumps name a label or are 0 (next).
    prog: list[tuple[str, int, str | int, str | int, int]] = []

    def emit(code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0, label: str = "") -> None:
        prog.append((label, code, jt, jf, k))

    def ports_then(otherwise: str | int) -> None:
        """A holds a port: accept on a match; the last miss goes to `otherwise`."""
        for i, port in enumerate(plist):
            emit(_JEQ_K, port, "accept", otherwise if i == len(plist) - 1 else 0)

    emit(_LD_W_ABS, (SKF_AD_OFF + SKF_AD_PROTOCOL) & 0xFFFFFFFF)  # A = skb->protocol
    emit(_JEQ_K, ETH_P_IP, "v4")
    emit(_JEQ_K, ETH_P_IPV6, "v6", "drop")
    emit(_LD_B_ABS, net(9), label="v4")  # protocol
    emit(_JEQ_K, 17, 0, "drop")
    emit(_LD_H_ABS, net(6))  # flags and fragment offset
    emit(_JSET_K, 0x1FFF, "drop")  # a later fragment carries no UDP header
    emit(_LDX_B_MSH, net(0))  # X = IPv4 header length
    emit(_LD_H_IND, net(0))  # source port
    ports_then(0)
    emit(_LD_H_IND, net(2))  # destination port
    ports_then("drop")
    emit(_LD_B_ABS, net(6), label="v6")  # next header
    emit(_JEQ_K, 17, "v6udp")
    for ext in (0, 43, 44):  # hop-by-hop, routing, fragment: let Python walk them
        emit(_JEQ_K, ext, "accept")
    emit(_JEQ_K, 60, "accept", "drop")  # destination options
    emit(_LD_H_ABS, net(40), label="v6udp")
    ports_then(0)
    emit(_LD_H_ABS, net(42))
    ports_then("drop")
    emit(_RET_K, 0x40000, label="accept")
    emit(_RET_K, 0, label="drop")

    labels = {label: i for i, (label, *_) in enumerate(prog) if label}
    out: list[tuple[int, int, int, int]] = []
    for i, (_, code, jt, jf, k) in enumerate(prog):
        jumps = []
        for target in (jt, jf):
            delta = labels[target] - i - 1 if isinstance(target, str) else target
            if not 0 <= delta <= 255:
                raise ValueError("BPF jump out of range")
            jumps.append(delta)
        out.append((code, jumps[0], jumps[1], k))
    return out


def attach_bpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a `struct sock_fprog` (kept alive only for the call: it is copied)."""
    import ctypes

    insns = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# ---------------------------------------------------------------------------------------------
# Local socket owner lookup
# ---------------------------------------------------------------------------------------------


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/udp6 prints four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def udp_socket_inodes(port: int) -> list[tuple[str, int]]:
    """(local ip, inode) of every UDP socket bound to local `port` (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    ip_hex, _, port_hex = parts[1].partition(":")
                    if int(port_hex, 16) != port:
                        continue
                    inode = int(parts[9])
                    if inode:
                        found.append((_hex_ip(ip_hex), inode))
        except (OSError, ValueError):
            continue
    return found


class SocketOwners:
    """Finds the process that owns a UDP socket, cheaply: cached, recent owners searched first."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._inode_pid: OrderedDict[int, int] = OrderedDict()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._cache_size = cache_size
        self._exe: dict[int, str | None] = {}

    def _scan_pid(self, pid: int, wanted: set[int]) -> int | None:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return None
        for name in names:
            try:
                link = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in wanted:
                    self._remember(inode, pid)
                    return inode
        return None

    def _remember(self, inode: int, pid: int) -> None:
        self._inode_pid[inode] = pid
        self._inode_pid.move_to_end(inode)
        while len(self._inode_pid) > self._cache_size:
            self._inode_pid.popitem(last=False)
        self._recent[pid] = None
        self._recent.move_to_end(pid)
        while len(self._recent) > 64:
            self._recent.popitem(last=False)

    def owner(self, ip: str, port: int) -> tuple[int, str | None] | None:
        """(pid, exe) of the local UDP socket `ip`:`port`, or None (not local, or gone)."""
        sockets = udp_socket_inodes(port)
        if not sockets:
            return None
        exact = [inode for sip, inode in sockets if sip == ip]
        wildcard = [inode for sip, inode in sockets if ipaddress.ip_address(sip).is_unspecified]
        wanted = set(exact or wildcard or [inode for _, inode in sockets])
        for inode in wanted:
            pid = self._inode_pid.get(inode)
            if pid is not None and os.path.exists(f"/proc/{pid}/fd"):
                return pid, self.exe(pid)
        pid = None
        for candidate in reversed(list(self._recent)):
            if self._scan_pid(candidate, wanted) is not None:
                pid = candidate
                break
        else:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                candidate = int(entry.name)
                if candidate in self._recent:
                    continue
                if self._scan_pid(candidate, wanted) is not None:
                    pid = candidate
                    break
        if pid is None:
            return None
        return pid, self.exe(pid)

    def exe(self, pid: int) -> str | None:
        try:
            path = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            path = None
        self._exe[pid] = path
        return path


# ---------------------------------------------------------------------------------------------
# The sensor
# ---------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    seen: float  # monotonic
    wall: float  # epoch seconds
    qname: str
    qtype: int
    server: str
    pid: int | None = None
    exe: str | None = None


def _has_cap_net_raw() -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_NET_RAW))
    except (OSError, ValueError):
        pass
    return False


class DnsSensor(Sensor):
    """DNS queries and responses on UDP port 53 (option `ports`), from a packet socket."""

    name: ClassVar[str] = "dns"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("dns",)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.ports: frozenset[int] = frozenset(int(p) for p in self.option("ports", [53]))
        self.interface: str | None = self.option("interface", None) or None
        self.timeout_s = float(self.option("timeout_s", 2.0))
        self.resolve_pid = bool(self.option("resolve_pid", True))
        self.poll_s = float(self.option("poll_s", 0.25))
        self.max_pending = int(self.option("max_pending", 65536))
        self._sock: socket.socket | None = None
        self._pending: OrderedDict[tuple[str, int, int], _Pending] = OrderedDict()
        # keys answered in the last timeout_s: a response seen again (the same datagram on a
        # bridge and on a veth, or a retransmitted answer) is not a second lookup
        self._answered: OrderedDict[tuple[str, int, int], float] = OrderedDict()
        self._owners = SocketOwners()
        self._running = False
        self.bpf_attached = False

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        missing = []
        if not sys.platform.startswith("linux"):
            missing.append("needs Linux (AF_PACKET sockets)")
            return missing
        if os.geteuid() != 0 and not _has_cap_net_raw():
            missing.append(
                f"needs root or CAP_NET_RAW to open an AF_PACKET raw socket "
                f"(running as uid {os.geteuid()} without CAP_NET_RAW)"
            )
        if self.interface:
            try:
                socket.if_nametoindex(self.interface)
            except OSError:
                missing.append(f"interface '{self.interface}' does not exist")
        if not self.ports or not all(0 < p < 65536 for p in self.ports):
            missing.append(f"option ports must be a list of UDP ports, got {sorted(self.ports)}")
        return missing

    def start(self) -> None:
        super().start()
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise SensorUnavailable(
                f"dns: cannot open an AF_PACKET raw socket: {exc} (needs root or CAP_NET_RAW)"
            ) from exc
        except OSError as exc:
            raise SensorUnavailable(f"dns: cannot open an AF_PACKET raw socket: {exc}") from exc
        try:
            try:
                attach_bpf(sock, bpf_program(self.ports))
                self.bpf_attached = True
            except (OSError, ValueError) as exc:
                self.count("bpf_fallback")
                log.warning("dns.bpf_unavailable", error=str(exc), fallback="python filter")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            if self.interface:
                sock.bind((self.interface, ETH_P_ALL))
            sock.settimeout(self.poll_s)
        except OSError as exc:
            sock.close()
            raise SensorUnavailable(f"dns: cannot bind to '{self.interface}': {exc}") from exc
        self._sock = sock
        log.info(
            "dns.started",
            interface=self.interface or "all",
            ports=sorted(self.ports),
            bpf=self.bpf_attached,
        )

    def stop(self) -> None:
        super().stop()
        if not self._running:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    # -- the loop ---------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        if self._sock is None:
            self.start()
        sock = self._sock
        assert sock is not None
        self._running = True
        buf = bytearray(1 << 17)  # lo's MTU is 64 KiB
        view = memoryview(buf)
        try:
            while not self.stopping.is_set():
                try:
                    size, addr = sock.recvfrom_into(buf)
                except TimeoutError:
                    yield from self._expire(time.monotonic())
                    continue
                except OSError as exc:
                    if self.stopping.is_set():
                        break
                    log.warning("dns.recv_failed", error=str(exc))
                    time.sleep(self.poll_s)
                    continue
                now_wall = time.time()
                event = self.handle_frame(bytes(view[:size]), addr, now_wall, time.monotonic())
                if event is not None:
                    yield event
                yield from self._expire(time.monotonic())
        finally:
            self._running = False
            if self._pending:
                self.count("pending_dropped", len(self._pending))
                self._pending.clear()
            self._close()

    def handle_frame(
        self, frame: bytes, addr: tuple[Any, ...], wall: float, mono: float
    ) -> Event | None:
        """Process one frame from recvfrom; the event it completes, if any. Never raises."""
        ifname, _proto, pkttype, hatype = addr[0], addr[1], addr[2], addr[3]
        if pkttype == PACKET_OUTGOING and (ifname == "lo" or hatype == ARPHRD_LOOPBACK):
            return None  # the incoming copy on lo is the one we count
        try:
            dgram = parse_frame(frame, hatype)
            if dgram is None:
                return None
            if dgram.src_port not in self.ports and dgram.dst_port not in self.ports:
                return None
            self.count("packets")
            msg = parse_dns(dgram.payload)
        except Fragmented:
            self.count("fragmented")
            return None
        except (DnsFormatError, ValueError, struct.error, IndexError, OSError):
            self.count("malformed")
            return None
        if msg.opcode != 0:
            return None  # NOTIFY, UPDATE, ...: not lookups
        try:
            if msg.is_response:
                return self._on_response(dgram, msg, wall, mono)
            self._on_query(dgram, msg, wall, mono)
        except Exception as exc:  # a bug in our own bookkeeping must not end the sensor
            self.count("errors")
            log.warning("dns.handle_failed", error=repr(exc))
        return None

    def _on_query(self, dgram: Datagram, msg: DnsMessage, wall: float, mono: float) -> None:
        key = (dgram.src_ip, dgram.src_port, msg.txid)
        if key in self._pending:
            return  # a retransmission, or the same datagram on another link: keep the first
        self._answered.pop(key, None)
        self.count("queries")
        pending = _Pending(mono, wall, msg.qname, msg.qtype, dgram.dst_ip)
        if self.resolve_pid:
            self._resolve(pending, dgram.src_ip, dgram.src_port)
        self._pending[key] = pending
        while len(self._pending) > self.max_pending:  # a flood of unanswered queries
            self._pending.popitem(last=False)
            self.count("pending_overflow")

    def _resolve(self, pending: _Pending, ip: str, port: int) -> None:
        try:
            found = self._owners.owner(ip, port)
        except OSError:
            found = None
        if found is None:
            self.count("pid_unresolved")
            return
        self.count("pid_resolved")
        pending.pid, pending.exe = found

    def _on_response(
        self, dgram: Datagram, msg: DnsMessage, wall: float, mono: float
    ) -> Event | None:
        key = (dgram.dst_ip, dgram.dst_port, msg.txid)
        if key in self._answered:
            self.count("duplicate_responses")
            return None
        self.count("responses")
        self._answered[key] = mono
        while len(self._answered) > self.max_pending:
            self._answered.popitem(last=False)
        pending = self._pending.pop(key, None)
        if pending is None:
            self.count("unmatched_responses")
            pending = _Pending(0.0, wall, msg.qname, msg.qtype, dgram.src_ip)
            if self.resolve_pid:
                self._resolve(pending, dgram.dst_ip, dgram.dst_port)
        qtype = QTYPES.get(msg.qtype)
        if qtype is None:
            self.count("unsupported_qtype")
            return None
        obj: dict[str, Any] = {"query": msg.qname, "qtype": qtype}
        rcode = RCODES.get(msg.rcode)
        if rcode is None:
            self.count("unmapped_rcode")
        else:
            obj["rcode"] = rcode
        obj["answers"] = msg.answers
        obj["server"] = dgram.src_ip
        self._owner_fields(obj, pending)
        return {"kind": "dns", "ts": utc_from_epoch(pending.wall), "dns": obj}

    @staticmethod
    def _owner_fields(obj: dict[str, Any], pending: _Pending) -> None:
        if pending.pid is not None:
            obj["pid"] = pending.pid
        if pending.exe:
            obj["exe"] = pending.exe

    def _expire(self, mono: float) -> Iterator[Event]:
        while self._answered and mono - next(iter(self._answered.values())) >= self.timeout_s:
            self._answered.popitem(last=False)
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if mono - pending.seen < self.timeout_s:
                break
            del self._pending[key]
            self.count("timeouts")
            qtype = QTYPES.get(pending.qtype)
            if qtype is None:
                self.count("unsupported_qtype")
                continue
            obj: dict[str, Any] = {"query": pending.qname, "qtype": qtype, "server": pending.server}
            self._owner_fields(obj, pending)
            yield {"kind": "dns", "ts": utc_from_epoch(pending.wall), "dns": obj}


__all__ = [
    "DnsFormatError",
    "DnsMessage",
    "DnsSensor",
    "attach_bpf",
    "bpf_program",
    "parse_dns",
    "parse_frame",
    "parse_ip",
    "read_name",
]
