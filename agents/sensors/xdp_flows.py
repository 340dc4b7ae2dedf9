"""xdp-flows: packets and bytes per 5-tuple arriving on one interface, reported every interval.

Connection sensors (bcc-net, netconn) see TCP sockets of this host; they do not see UDP, traffic
to closed ports, scans, or volumes. An XDP program sees every frame the interface receives,
before the network stack, at a cost of a hash update per packet, and is the cheapest place to
count flows.

Kernel side (`BPF_SOURCE`): Ethernet (with up to two VLAN tags) -> IPv4 (any header length,
first fragments only for ports) or IPv6 (TCP/UDP as the first next header) -> TCP/UDP ports;
every access is bounds-checked against `data_end`. Counts go to one of two hashes of at most
`max_flows` 5-tuples (packets and bytes, atomically added); the user side flips which one the
program writes to every `interval_s`, then reads and empties the other, so no packet is
counted twice or lost between reads. A packet whose new flow does not fit in a full map is
counted in `lost` (reported as the "lost" counter and a warning). Every packet is passed on
(XDP_PASS): the sensor only observes.

Options: `interface` (required), `interval_s` (default 5), `max_flows` (default 65536),
`mode` ("skb", generic XDP, works on every driver, the default; or "native"). Events: one
`net` event per flow and interval, action "flow", with `packets` and `bytes_in` (XDP sees
ingress only; bytes are whole frames from the Ethernet header on, without the FCS).
"""

from __future__ import annotations

import ctypes
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from agents.sensors._bcc import (
    CAP_NET_ADMIN,
    LOST_COUNTER_C,
    BccSensor,
    LostCounter,
    bcc_missing,
    cleanup_bpf,
    load_bcc,
)
from agents.sensors.base import Event, SensorUnavailable, utc_from_epoch
from sentinel.logs import get_logger

log = get_logger(__name__)

BPF_SOURCE = (
    LOST_COUNTER_C
    + r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

struct flow_key {
    u8 src[16];     /* IPv4 in the first 4 bytes */
    u8 dst[16];
    u16 sport;      /* host order */
    u16 dport;
    u8 proto;       /* IPPROTO_TCP, IPPROTO_UDP */
    u8 family;      /* 4 or 6 */
    u16 pad;
};

struct flow_val {
    u64 packets;
    u64 bytes;
};

struct vlan_hdr_t { __be16 tci; __be16 proto; };

BPF_HASH(flows0, struct flow_key, struct flow_val, MAX_FLOWS);
BPF_HASH(flows1, struct flow_key, struct flow_val, MAX_FLOWS);
BPF_ARRAY(active, u32, 1);

static __always_inline void account(struct flow_key *k, u64 len) {
    u32 zero = 0;
    u32 *which = active.lookup(&zero);
    struct flow_val *v;
    struct flow_val init = {1, len};
    if (which && *which) {
        v = flows1.lookup(k);
        if (v) { __sync_fetch_and_add(&v->packets, 1); __sync_fetch_and_add(&v->bytes, len); return; }
        if (flows1.insert(k, &init) == 0) return;
        v = flows1.lookup(k);  /* inserted meanwhile by another CPU? */
    } else {
        v = flows0.lookup(k);
        if (v) { __sync_fetch_and_add(&v->packets, 1); __sync_fetch_and_add(&v->bytes, len); return; }
        if (flows0.insert(k, &init) == 0) return;
        v = flows0.lookup(k);
    }
    if (v) { __sync_fetch_and_add(&v->packets, 1); __sync_fetch_and_add(&v->bytes, len); return; }
    count_lost();   /* the map is full */
}

int xdp_flows(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end) return XDP_PASS;
    u16 proto = eth->h_proto;
    void *p = eth + 1;
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto == htons(ETH_P_8021Q) || proto == htons(ETH_P_8021AD)) {
            struct vlan_hdr_t *vh = p;
            if ((void *)(vh + 1) > data_end) return XDP_PASS;
            proto = vh->proto;
            p = vh + 1;
        }
    }
    struct flow_key k = {};
    u8 l4;
    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = p;
        if ((void *)(ip + 1) > data_end) return XDP_PASS;
        u32 ihl = ip->ihl * 4;
        if (ihl < sizeof(*ip)) return XDP_PASS;
        l4 = ip->protocol;
        __builtin_memcpy(k.src, &ip->saddr, 4);
        __builtin_memcpy(k.dst, &ip->daddr, 4);
        k.family = 4;
        if (ip->frag_off & htons(0x1FFF)) {
            p = 0;      /* a later fragment: no ports in it */
        } else {
            p = (void *)ip + (ihl & 0x3C);
        }
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = p;
        if ((void *)(ip6 + 1) > data_end) return XDP_PASS;
        l4 = ip6->nexthdr;
        __builtin_memcpy(k.src, &ip6->saddr, 16);
        __builtin_memcpy(k.dst, &ip6->daddr, 16);
        k.family = 6;
        p = ip6 + 1;
    } else {
        return XDP_PASS;
    }
    if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP) return XDP_PASS;
    k.proto = l4;
    if (p) {
        /* both headers start with the source and destination ports */
        struct udphdr *ports = p;
        if ((void *)(ports + 1) > data_end) return XDP_PASS;
        k.sport = ntohs(ports->source);
        k.dport = ntohs(ports->dest);
    }
    account(&k, len);
    return XDP_PASS;
}
"""
)

#: time allowed for XDP runs that saw the old map selector to finish (they take microseconds)
FLIP_GRACE_S = 0.02


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("src", ctypes.c_ubyte * 16),
        ("dst", ctypes.c_ubyte * 16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


def _ip(family: int, raw: bytes) -> str:
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def flow_event(
    *,
    family: int,
    proto: int,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    packets: int,
    nbytes: int,
    ts: str,
) -> Event:
    """One flow's counts over an interval as a partial contract event."""
    return {
        "kind": "net",
        "ts": ts,
        "net": {
            "action": "flow",
            "proto": "tcp" if proto == socket.IPPROTO_TCP else "udp",
            "src_ip": _ip(family, src),
            "src_port": sport,
            "dst_ip": _ip(family, dst),
            "dst_port": dport,
            "packets": packets,
            "bytes_in": nbytes,
        },
    }


class XdpFlowsSensor(BccSensor):
    name: ClassVar[str] = "xdp-flows"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("net",)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.interface = str(self.option("interface", "") or "")
        self.interval_s = float(self.option("interval_s", 5.0))
        self.max_flows = int(self.option("max_flows", 65536))
        self.mode = str(self.option("mode", "skb"))
        self._flags = 0
        self._attached = False
        self._lost: LostCounter | None = None
        self._active = 0

    def check(self) -> list[str]:
        missing: list[str] = []
        if not self.interface:
            missing.append("option interface is required (the device to count flows on)")
        elif not Path("/sys/class/net", self.interface).exists():
            missing.append(f"network interface {self.interface} does not exist")
        if self.mode not in ("skb", "native"):
            missing.append(f"option mode must be skb or native, got {self.mode!r}")
        if self.max_flows < 1:
            missing.append(f"option max_flows must be positive, got {self.max_flows}")
        if self.interval_s <= 0:
            missing.append(f"option interval_s must be positive, got {self.interval_s}")
        return missing + bcc_missing(need_caps=(CAP_NET_ADMIN,))

    def start(self) -> None:
        if self.bpf is not None:
            return
        super().start()
        bcc = load_bcc()
        BPF = bcc.BPF
        self._flags = BPF.XDP_FLAGS_SKB_MODE if self.mode == "skb" else BPF.XDP_FLAGS_DRV_MODE
        try:
            self.bpf = BPF(text=BPF_SOURCE.encode(), cflags=[f"-DMAX_FLOWS={self.max_flows}"])
            fn = self.bpf.load_func(b"xdp_flows", BPF.XDP)
            # never replace an XDP program someone else attached: fail and say so instead
            BPF.attach_xdp(
                self.interface.encode(), fn, flags=self._flags | BPF.XDP_FLAGS_UPDATE_IF_NOEXIST
            )
            self._attached = True
        except Exception as exc:
            self._close()
            raise SensorUnavailable(
                f"{self.name}: attaching XDP to {self.interface} ({self.mode} mode) failed: {exc}"
            ) from exc
        self._lost = LostCounter(self.bpf[b"lost"], self, "packets of new flows (flow map full)")
        self._active = 0
        log.info(
            "sensor started",
            sensor=self.name,
            interface=self.interface,
            mode=self.mode,
            interval_s=self.interval_s,
            max_flows=self.max_flows,
        )

    def _close(self) -> None:
        if self._attached:
            try:
                load_bcc().BPF.remove_xdp(self.interface.encode(), flags=self._flags)
            except Exception as exc:
                log.warning("removing XDP failed", interface=self.interface, error=str(exc))
            self._attached = False
        if self.bpf is not None:
            if self._lost is not None:
                self._lost.poll()
            cleanup_bpf(self.bpf)
            self.bpf = None

    def events(self) -> Iterator[Event]:
        if not self._enter_events():
            return
        lost = self._lost
        assert lost is not None
        try:
            due = time.monotonic() + self.interval_s
            while not self.stopping.wait(min(0.25, max(0.0, due - time.monotonic()))):
                if time.monotonic() < due:
                    continue
                due += self.interval_s
                yield from self.collect()
                lost.poll()
            # the partial last interval: detach first, so the counts are final
            if self._attached:
                load_bcc().BPF.remove_xdp(self.interface.encode(), flags=self._flags)
                self._attached = False
            yield from self.collect(both=True)
            lost.poll()
        finally:
            self._leave_events()

    def collect(self, both: bool = False) -> Iterator[Event]:
        """Flip the map the program writes to, then drain the one it wrote to until now."""
        bpf = self.bpf
        if bpf is None:
            return
        old = self._active
        self._active = 1 - old
        bpf[b"active"][ctypes.c_int(0)] = ctypes.c_uint32(self._active)
        time.sleep(FLIP_GRACE_S)
        ts = utc_from_epoch(time.time())
        for which in (old, self._active) if both else (old,):
            yield from self._drain(bpf[f"flows{which}".encode()], ts)

    def _drain(self, table: Any, ts: str) -> Iterator[Event]:
        try:
            items = list(table.items_lookup_and_delete_batch())
        except Exception:  # kernels without batch ops: read, then delete key by key
            items = [(k, table[k]) for k in list(table)]
            for k, _ in items:
                table.pop(k, None)
        self.count("flows", len(items))
        for key, val in items:
            yield flow_event(
                family=key.family,
                proto=key.proto,
                src=bytes(key.src),
                dst=bytes(key.dst),
                sport=key.sport,
                dport=key.dport,
                packets=int(val.packets),
                nbytes=int(val.bytes),
                ts=ts,
            )
