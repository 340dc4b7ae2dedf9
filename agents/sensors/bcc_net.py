"""bcc-net: every TCP connection this host opens (connect) or takes (accept), as it happens.

Polling /proc/net/tcp (the netconn sensor) misses connections shorter than its interval and
cannot tell who opened one that has already closed; the kernel's `sock:inet_sock_set_state`
tracepoint sees every TCP state change, IPv4 and IPv6, with the addresses and ports in its
arguments, so no kernel struct is read (the installed headers are older than the running
kernel; see `_bcc.py`).

Kernel side (`BPF_SOURCE`):

- `-> SYN_SENT` runs in the connecting process (connect(2)): remember socket -> pid, comm;
- `SYN_SENT -> ESTABLISHED` emits a connect, with the pid remembered above (the handshake
  completes in softirq context, where the current task is anybody);
- `SYN_RECV -> ESTABLISHED` emits an accept; the pid is that of the process that called
  listen(2) on the local port (`CLOSE -> LISTEN` runs in that process), which is right for
  the usual one-process server and best effort for pre-forked ones; a listener opened before
  the sensor started is looked up once in /proc (socket inode -> process) and remembered;
- a full ring buffer bumps the `lost` array (reported as the "lost" counter and a warning).

User side: `exe` from /proc/<pid>/exe while the process lives. For connect events src is the
local end and dst the remote one; for accept events src is the remote client and dst the
local listening address and port (the direction of the connection, as in the contract's
scenarios). IPv4-mapped IPv6 addresses are reported as IPv4.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from agents.sensors._bcc import (
    LOST_COUNTER_C,
    RingSensor,
    bcc_missing,
    proc_link,
)
from agents.sensors.base import Event
from sentinel.logs import get_logger

log = get_logger(__name__)

TRACEPOINTS = ("sock:inet_sock_set_state",)

K_CONNECT = 1
K_ACCEPT = 2

BPF_SOURCE = (
    LOST_COUNTER_C
    + r"""
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define K_CONNECT 1
#define K_ACCEPT 2
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

struct who_t { u32 pid; u32 uid; char comm[16]; };

struct net_ev {
    u32 kind;       /* K_CONNECT, K_ACCEPT */
    u32 pid;        /* 0 = unknown */
    u32 uid;
    u16 family;
    u16 sport;      /* local port (host order) */
    u16 dport;      /* remote port (host order) */
    u16 pad;
    u32 pad2;
    u64 ts;
    u8 saddr[16];   /* local address; IPv4 in the first 4 bytes */
    u8 daddr[16];   /* remote address */
    char comm[16];
};

BPF_TABLE("lru_hash", u64, struct who_t, connecting, 65536);  /* sock -> who connects */
BPF_TABLE("lru_hash", u16, struct who_t, listening, 4096);    /* local port -> listener */
BPF_RINGBUF_OUTPUT(events, RING_PAGES);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP) return 0;
    int olds = args->oldstate, news = args->newstate;
    u64 sk = (u64)args->skaddr;
    if (news == TCP_SYN_SENT || news == TCP_LISTEN) {
        /* connect(2) or listen(2): process context, the current task is the owner */
        struct who_t w = {};
        w.pid = bpf_get_current_pid_tgid() >> 32;
        w.uid = bpf_get_current_uid_gid();
        bpf_get_current_comm(&w.comm, sizeof(w.comm));
        if (news == TCP_SYN_SENT) {
            connecting.update(&sk, &w);
        } else {
            u16 port = args->sport;
            listening.update(&port, &w);
        }
        return 0;
    }
    if (olds == TCP_LISTEN && news == TCP_CLOSE) {
        u16 port = args->sport;
        listening.delete(&port);
        return 0;
    }
    if (olds == TCP_SYN_SENT && news != TCP_ESTABLISHED) {
        connecting.delete(&sk);   /* refused, timed out, reset */
        return 0;
    }
    if (news != TCP_ESTABLISHED || (olds != TCP_SYN_SENT && olds != TCP_SYN_RECV)) return 0;
    struct net_ev *e = events.ringbuf_reserve(sizeof(struct net_ev));
    if (!e) { count_lost(); return 0; }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->family = args->family;
    e->sport = args->sport;
    e->dport = args->dport;
    if (args->family == AF_INET6) {
        __builtin_memcpy(e->saddr, args->saddr_v6, 16);
        __builtin_memcpy(e->daddr, args->daddr_v6, 16);
    } else {
        __builtin_memcpy(e->saddr, args->saddr, 4);
        __builtin_memcpy(e->daddr, args->daddr, 4);
    }
    struct who_t *w = 0;
    if (olds == TCP_SYN_SENT) {
        e->kind = K_CONNECT;
        w = connecting.lookup(&sk);
    } else {
        e->kind = K_ACCEPT;
        u16 port = args->sport;
        w = listening.lookup(&port);
    }
    if (w) {
        e->pid = w->pid;
        e->uid = w->uid;
        __builtin_memcpy(e->comm, w->comm, 16);
    }
    if (olds == TCP_SYN_SENT) connecting.delete(&sk);
    events.ringbuf_submit(e, 0);
    return 0;
}
"""
)

_NET = struct.Struct("<3I4H I Q 16s 16s 16s")


class NetRecord(NamedTuple):
    """One established TCP connection as the kernel reported it."""

    kind: int  # K_CONNECT or K_ACCEPT
    pid: int  # 0 = unknown
    uid: int
    family: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    ktime_ns: int
    comm: str


def _ip(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        addr = ipaddress.IPv6Address(raw)
        return str(addr.ipv4_mapped or addr)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def decode(raw: bytes) -> NetRecord | None:
    if len(raw) < _NET.size:
        return None
    kind, pid, uid, family, sport, dport, _, _, ts, saddr, daddr, comm = _NET.unpack_from(raw)
    if kind not in (K_CONNECT, K_ACCEPT) or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return NetRecord(
        kind,
        pid,
        uid,
        family,
        _ip(family, saddr),
        sport,
        _ip(family, daddr),
        dport,
        ts,
        comm.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"),
    )


def net_event(rec: NetRecord, *, ts: str, pid: int | None, exe: str | None) -> Event:
    """The partial contract event: src -> dst in the direction the connection was opened."""
    if rec.kind == K_CONNECT:
        src, sport, dst, dport = rec.local_ip, rec.local_port, rec.remote_ip, rec.remote_port
    else:
        src, sport, dst, dport = rec.remote_ip, rec.remote_port, rec.local_ip, rec.local_port
    net: dict[str, Any] = {
        "action": "connect" if rec.kind == K_CONNECT else "accept",
        "proto": "tcp",
        "src_ip": src,
        "src_port": sport,
        "dst_ip": dst,
        "dst_port": dport,
    }
    if pid:
        net["pid"] = pid
    if exe:
        net["exe"] = exe
    return {"kind": "net", "ts": ts, "net": net}


def listener_pids() -> dict[int, int]:
    """Local TCP port -> pid of a process holding a listening socket on it, from /proc."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A":  # TCP_LISTEN
                        inodes[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
        except OSError:
            continue
    found: dict[int, int] = {}
    if not inodes:
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                port = inodes.get(target[8:-1])
                if port is not None:
                    found.setdefault(port, int(name))
    return found


class BccNetSensor(RingSensor):
    name: ClassVar[str] = "bcc-net"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("net",)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.ring_pages = int(self.option("ring_pages", 256))
        self.batch_s = float(self.option("batch_ms", 20)) / 1000
        self._listeners: dict[int, int] = {}
        self._listeners_at = 0.0

    def check(self) -> list[str]:
        missing = bcc_missing(TRACEPOINTS)
        pages = self.ring_pages
        if pages <= 0 or pages & (pages - 1):
            missing.append(f"option ring_pages must be a power of two, got {pages}")
        return missing

    def start(self) -> None:
        if self.bpf is not None:
            return
        super().start()
        self._load(
            BPF_SOURCE,
            [f"-DRING_PAGES={self.ring_pages}"],
            "connection records (ring buffer full)",
        )
        log.info("sensor started", sensor=self.name, ring_kib=self.ring_pages * 4)

    def handle(self, raw: bytes) -> Event | None:
        rec = decode(raw)
        if rec is None:
            self.count("bad_records")
            return None
        pid: int | None = rec.pid or None
        if pid is None and rec.kind == K_ACCEPT:
            pid = self.listener(rec.local_port)
        if pid is None:
            self.count("no_pid")
        exe = proc_link(pid, "exe") if pid else None
        return net_event(rec, ts=self._ts.format(rec.ktime_ns), pid=pid, exe=exe)

    def listener(self, port: int) -> int | None:
        """The pid listening on `port` per /proc (a listener older than the sensor)."""
        pid = self._listeners.get(port)
        if pid is None and time.monotonic() - self._listeners_at > 10.0:
            # rescanning every fd of every process is not cheap: at most every 10 s
            self._listeners = listener_pids()
            self._listeners_at = time.monotonic()
            pid = self._listeners.get(port)
        return pid
