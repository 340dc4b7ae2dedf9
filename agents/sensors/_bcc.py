"""Shared plumbing of the eBPF sensors (bcc-exec, bcc-net, xdp-flows): BCC import and host checks.

BCC comes from Debian's `python3-bpfcc` (the PyPI package called `bcc` is unrelated), which
installs into the system interpreter's dist-packages, not into the project's virtual
environment; `load_bcc()` imports it from there by path. `bcc_missing()` says in plain words
what a host lacks to run a BCC sensor (privileges, tracefs, kernel headers, BCC itself, the
tracepoints), so `check()` can report it before anything is compiled.

Also here: the kernel-side drop counter every sensor uses (a one-slot BPF array the program
bumps when a ring-buffer reservation or a map insert fails; `LostCounter` turns its growth
into the sensor's "lost" counter and a warning), bounded pid caches, and best-effort /proc
readers for what BPF cannot give safely on this host: the running kernel is newer than the
installed headers, so the BPF programs never read kernel structs, only tracepoint arguments
and helpers, and the rest is looked up in user space.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from agents.sensors.base import Event, Sensor, SensorUnavailable
from sentinel.logs import get_logger

log = get_logger(__name__)

#: where Debian's python3-bpfcc installs the package; override with SENTINEL_AGENT_BCC_PATH
DEFAULT_BCC_PATH = "/usr/lib/python3/dist-packages/bcc"
TRACEFS = Path("/sys/kernel/tracing")
DEPS_HINT = "run `make agent-deps`"

# Capability bits (linux/capability.h).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

_bcc: ModuleType | None = None


class BccImportError(ImportError):
    """BCC's Python package cannot be imported; the message says which packages provide it."""


def bcc_path() -> Path:
    return Path(os.environ.get("SENTINEL_AGENT_BCC_PATH") or DEFAULT_BCC_PATH)


def load_bcc() -> ModuleType:
    """Import Debian's BCC package (once per process) and return the module."""
    global _bcc
    if _bcc is not None:
        return _bcc
    here = bcc_path()
    init = here / "__init__.py"
    if not init.is_file():
        raise BccImportError(
            f"BCC's Python package is not at {here} (set SENTINEL_AGENT_BCC_PATH to its "
            "directory); install the Debian packages python3-bpfcc and bpfcc-tools "
            f"({DEPS_HINT}); the PyPI package named bcc is unrelated"
        )
    existing = sys.modules.get("bcc")
    if existing is not None and getattr(existing, "__file__", None) == str(init):
        _bcc = existing
        return existing
    spec = importlib.util.spec_from_file_location(
        "bcc", init, submodule_search_locations=[str(here)]
    )
    if spec is None or spec.loader is None:
        raise BccImportError(f"cannot import BCC from {here}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken libbcc, a missing libbcc.so.0, ...
        sys.modules.pop("bcc", None)
        raise BccImportError(
            f"importing BCC from {here} failed ({exc}); reinstall the Debian packages "
            f"python3-bpfcc and bpfcc-tools ({DEPS_HINT})"
        ) from exc
    _bcc = module
    return module


def effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def has_cap(bit: int) -> bool:
    return bool(effective_caps() >> bit & 1)


def tracefs_mounted() -> bool:
    return (TRACEFS / "events").is_dir()


def ensure_tracefs() -> str | None:
    """Mount tracefs at /sys/kernel/tracing when it is missing and we may; None = mounted."""
    if tracefs_mounted():
        return None
    if not has_cap(CAP_SYS_ADMIN):
        return (
            f"tracefs is not mounted at {TRACEFS} and this process may not mount it "
            f"(as root: mount -t tracefs nodev {TRACEFS})"
        )
    done = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not tracefs_mounted():
        return (
            f"tracefs is not mounted at {TRACEFS} and mounting it failed: "
            f"{(done.stderr or done.stdout).strip() or 'no events directory after mount'}"
        )
    log.info("tracefs mounted", path=str(TRACEFS))
    return None


def bcc_missing(
    tracepoints: Iterable[str] = (), *, need_caps: Iterable[int] = (), headers: bool = True
) -> list[str]:
    """What this host lacks to compile and attach a BCC program; [] when nothing.

    `tracepoints` are "category:event" names that must exist under tracefs; `need_caps` are
    capabilities needed beyond the BPF ones (CAP_NET_ADMIN for XDP).
    """
    missing: list[str] = []
    caps = effective_caps()
    bpf_ok = bool(caps >> CAP_SYS_ADMIN & 1) or bool(
        caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1
    )
    if not bpf_ok:
        missing.append(
            "loading BPF programs needs root (CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON); "
            f"this process has uid {os.geteuid()} and CapEff {caps:#x}"
        )
    for bit in need_caps:
        if not caps >> bit & 1:
            missing.append(f"this sensor needs capability {bit} ({_cap_name(bit)})")
    tracefs_problem = ensure_tracefs()
    if tracefs_problem:
        missing.append(tracefs_problem)
    if headers:
        build = Path("/lib/modules") / os.uname().release / "build"
        if not build.exists():
            missing.append(
                f"kernel headers are missing: {build} does not exist ({DEPS_HINT}; it "
                "installs linux-headers and links them for the running kernel)"
            )
    try:
        load_bcc()
    except BccImportError as exc:
        missing.append(str(exc))
    if not tracefs_problem:
        for tp in tracepoints:
            category, _, event = tp.partition(":")
            if not (TRACEFS / "events" / category / event / "format").is_file():
                missing.append(f"tracepoint {tp} does not exist on this kernel")
    return missing


def _cap_name(bit: int) -> str:
    return {
        CAP_NET_ADMIN: "CAP_NET_ADMIN",
        CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
        CAP_PERFMON: "CAP_PERFMON",
        CAP_BPF: "CAP_BPF",
    }.get(bit, str(bit))


def cleanup_bpf(bpf: Any) -> None:
    """Detach everything and close the program's fds; never raises (it runs in finally blocks)."""
    if bpf is None:
        return
    try:
        bpf.cleanup()
    except Exception as exc:
        log.warning("bpf cleanup failed", error=str(exc))


class LostCounter:
    """The sensor-side half of the drop counter: a one-slot BPF array the program increments.

    BPF side (see `LOST_COUNTER_C`): `BPF_ARRAY(lost, u64, 1);` and `count_lost()` wherever a
    ring-buffer reservation or a bounded-map insert fails. `poll()` reads the slot and reports
    the growth since the last call as `sensor.count("lost", n)` plus one warning.
    """

    def __init__(self, table: Any, sensor: Any, what: str) -> None:
        self.table = table
        self.sensor = sensor
        self.what = what
        self.seen = 0
        self.last_poll = 0.0

    def value(self) -> int:
        return sum(int(v.value) for v in self.table.values())

    def poll(self, every_s: float = 0.0) -> int:
        now = time.monotonic()
        if every_s and now - self.last_poll < every_s:
            return 0
        self.last_poll = now
        try:
            total = self.value()
        except Exception:  # the map is gone (sensor shutting down)
            return 0
        delta = total - self.seen
        if delta > 0:
            self.seen = total
            self.sensor.count("lost", delta)
            log.warning(
                "kernel events lost",
                sensor=self.sensor.name,
                what=self.what,
                lost=delta,
                lost_total=total,
            )
        return max(delta, 0)


#: C fragment for the drop counter; the programs include it verbatim.
LOST_COUNTER_C = r"""
BPF_ARRAY(lost, u64, 1);
static __always_inline void count_lost(void) {
    u32 zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n) __sync_fetch_and_add(n, 1);
}
"""


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A size-bounded dict (oldest insert evicted first): the pid -> exe / ppid caches.

    FIFO rather than LRU on purpose: a lookup costs one dict access, which matters at
    thousands of events per second, and pids are short-lived keys anyway.
    """

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self.data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self.data.get(key)

    def put(self, key: K, value: V) -> None:
        data = self.data
        if key not in data and len(data) >= self.size:
            del data[next(iter(data))]  # the oldest insert
        data[key] = value

    def pop(self, key: K) -> V | None:
        return self.data.pop(key, None)

    def __len__(self) -> int:
        return len(self.data)


def proc_ppid(pid: int) -> int | None:
    """The parent pid from /proc/<pid>/stat (None when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # the comm may hold spaces and parentheses: the fields follow the last ')'
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def proc_link(pid: int, name: str) -> str | None:
    """readlink /proc/<pid>/<name> (exe, cwd), best effort."""
    try:
        target = os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return None
    return target or None


class PpidCache:
    """pid -> ppid: what the kernel map said at fork time, else /proc/<pid>/stat, remembered."""

    def __init__(self, size: int = 16384) -> None:
        self.cache: BoundedCache[int, int] = BoundedCache(size)

    def get(self, pid: int, from_kernel: int = 0) -> int | None:
        if from_kernel > 0:
            self.cache.put(pid, from_kernel)
            return from_kernel
        cached = self.cache.get(pid)
        if cached is not None:
            return cached
        found = proc_ppid(pid)
        if found is not None:
            self.cache.put(pid, found)
        return found

    def forget(self, pid: int) -> None:
        self.cache.pop(pid)


def monotonic_to_epoch_offset() -> float:
    """Seconds to add to CLOCK_MONOTONIC (bpf_ktime_get_ns) to get the wall clock."""
    return time.time() - time.monotonic()


def c_str(raw: bytes) -> str:
    """A NUL-terminated C char array as text (undecodable bytes escaped, not dropped)."""
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "backslashreplace")


def record_bytes(data: Any, size: int) -> bytes:
    """Copy one ring-buffer record out of BCC's callback (its memory is reused after return)."""
    return ctypes.string_at(data, size)


class Timestamps:
    """bpf_ktime_get_ns() (CLOCK_MONOTONIC) to the contract's RFC 3339 text, fast.

    The offset to the wall clock is taken once; the text up to the millisecond is cached
    (`prefix(ms)`), so a timestamp is that prefix plus one of 1,000 prebuilt "uuuZ" tails: at
    tens of thousands of records a second, strftime (or even a format spec) per record would
    be a large part of the cost. Hot loops inline `format()` with `offset_us`, `prefix()` and
    `US_TAILS` (see bcc_exec).
    """

    #: "000Z" .. "999Z": the microseconds within a millisecond, and the zone
    US_TAILS: tuple[str, ...] = tuple(f"{i:03d}Z" for i in range(1000))

    def __init__(self) -> None:
        self.offset = monotonic_to_epoch_offset()
        self.offset_us = round(self.offset * 1e6)
        self._sec = -1
        self._sec_text = ""
        self._ms = -1
        self._ms_text = ""

    def epoch(self, ktime_ns: int) -> float:
        return ktime_ns / 1e9 + self.offset

    def prefix(self, ms: int) -> str:
        """ "YYYY-MM-DDTHH:MM:SS.mmm" for `ms` milliseconds since the epoch (cached)."""
        if ms != self._ms:
            sec, milli = divmod(ms, 1000)
            if sec != self._sec:
                self._sec_text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                self._sec = sec
            self._ms_text = f"{self._sec_text}.{milli:03d}"
            self._ms = ms
        return self._ms_text

    def format(self, ktime_ns: int) -> str:
        micros = ktime_ns // 1000 + self.offset_us
        ms = micros // 1000
        return (self._ms_text if ms == self._ms else self.prefix(ms)) + self.US_TAILS[micros % 1000]


class RingReader:
    """Drains a BPF ring buffer (BPF_RINGBUF_OUTPUT) into raw records (bytes), batch by batch.

    The fast path maps the ring into this process and walks it the way libbpf does (consumer
    page read-write, producer page and the twice-mapped data area read-only; 8-byte record
    headers with BUSY and DISCARD bits), which costs a fraction of a microsecond per record;
    BCC's `open_ring_buffer` calls back into Python through ctypes per record (about 2 us
    here), which at 10k execs a second (20k records) is a few percent of a core on its own.
    If the mapping fails, BCC's callback path is used instead.
    """

    BUSY = 1 << 31
    DISCARD = 1 << 30

    def __init__(self, bpf: Any, table: bytes) -> None:
        self.bpf = bpf
        self.pending: list[bytes] = []
        self._mapped = False
        self._epoll: Any = None
        try:
            self._map(bpf[table])
        except (OSError, ValueError, AttributeError) as exc:
            log.info("ring buffer mmap unavailable, using BCC callbacks", error=str(exc))
            self._callback(bpf[table])

    def _map(self, ring: Any) -> None:
        import mmap
        import select

        fd = int(ring.map_fd)
        size = int(ring.max_entries)  # data area bytes, a power of two
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # aligned 8-byte positions read and written as single loads and stores
        self._cons_pos = ctypes.c_uint64.from_buffer(self._cons)
        self._prod_view = memoryview(self._prod)
        # native u32 / u64 views: a header or the producer position is one index, no tuple
        self._words = self._prod_view.cast("I")
        self._prod_pos = self._prod_view[:8].cast("Q")
        self._mask = size - 1
        self._page = page
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self._mapped = True

    def _callback(self, ring: Any) -> None:
        string_at = ctypes.string_at
        append = self.pending.append

        def on_record(_ctx: Any, data: Any, size: int) -> int:
            append(string_at(data, size))
            return 0

        self._cb = on_record
        ring.open_ring_buffer(on_record)

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to `timeout_ms` for records and return all that are committed."""
        if not self._mapped:
            self.bpf.ring_buffer_poll(timeout=timeout_ms)
            if not self.pending:
                return []
            batch = self.pending[:]
            self.pending.clear()
            return batch
        out = self._drain()
        if out or timeout_ms == 0:
            return out
        self._epoll.poll(timeout_ms / 1000)
        return self._drain()

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        append = out.append
        ring, words, prod_pos = self._prod, self._words, self._prod_pos
        page, mask = self._page, self._mask
        busy, flags = self.BUSY, self.BUSY | self.DISCARD
        cons = self._cons_pos.value
        while True:
            prod = prod_pos[0]
            start = cons
            while cons < prod:
                at = page + (cons & mask)
                length = words[at >> 2]  # positions are 8-byte aligned
                if length & flags:
                    if length & busy:
                        break  # reserved, not committed yet: the records after it wait too
                    cons += ((length & ~flags) + 15) & ~7  # discarded: skip it
                    continue
                at += 8
                append(ring[at : at + length])  # one copy out of the mapping (mmap slice)
                cons += (length + 15) & ~7  # 8-byte header, 8-byte aligned
            self._cons_pos.value = cons  # frees the space for the producers
            if cons == start or len(out) >= 65536:
                return out

    def close(self) -> None:
        if self._mapped:
            self._mapped = False
            with contextlib.suppress(Exception):
                self._epoll.close()
            del self._cons_pos
            self._words.release()
            self._prod_pos.release()
            self._prod_view.release()
            with contextlib.suppress(Exception):
                self._cons.close()
                self._prod.close()


class BccSensor(Sensor):
    """The life cycle the BCC sensors share: events() owns the BPF object once it runs.

    BCC objects are not thread-safe, so stop() (called from another thread) only sets the
    flag while events() is running, and events() detaches and frees everything on its way
    out; if events() never ran, stop() frees it directly. Subclasses with more to free override
    `_close()` (idempotent) and call `_enter_events()` / `_leave_events()` around their loop.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.bpf: Any = None
        self._ring: RingReader | None = None
        self._lost: LostCounter | None = None
        self._lock = threading.Lock()
        self._in_events = False

    def stop(self) -> None:
        super().stop()
        with self._lock:
            if not self._in_events:
                self._close()

    def _close(self) -> None:
        """Free the program (idempotent): a last read of the lost counter, the ring, the BPF."""
        if self.bpf is not None:
            if self._lost is not None:
                self._lost.poll()
            if self._ring is not None:
                self._ring.close()
            cleanup_bpf(self.bpf)
            self.bpf = None
            self._ring = None

    def _enter_events(self) -> bool:
        """Start if needed and mark events() as running; False when already stopped."""
        with self._lock:
            if self.stopping.is_set():
                self._close()
                return False
            if self.bpf is None:
                self.start()
            self._in_events = True
            return True

    def _leave_events(self) -> None:
        with self._lock:
            self._in_events = False
            self._close()


class RingSensor(BccSensor):
    """A BCC sensor whose program submits records to one ring buffer `events`, with a `lost` array.

    Subclasses set `ring_pages` and `batch_s` (how long records gather between drains), call
    `_load()` from start(), and turn records into events in `handle()` (or `handle_batch()`
    when a batch is cheaper to handle as a whole).
    """

    ring_pages: int
    batch_s: float

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._ts = Timestamps()

    def _load(self, source: str, cflags: list[str], lost_what: str) -> None:
        """Compile and attach `source`; map its ring buffer; SensorUnavailable on failure."""
        bcc = load_bcc()
        try:
            self.bpf = bcc.BPF(text=source.encode(), cflags=cflags)
            self._ring = RingReader(self.bpf, b"events")
        except Exception as exc:
            cleanup_bpf(self.bpf)
            self.bpf = None
            raise SensorUnavailable(f"{self.name}: loading the BPF program failed: {exc}") from exc
        self._lost = LostCounter(self.bpf[b"lost"], self, lost_what)
        self._ts = Timestamps()

    def events(self) -> Iterator[Event]:
        if not self._enter_events():
            return
        ring, lost = self._ring, self._lost
        assert ring is not None and lost is not None
        try:
            while not self.stopping.is_set():
                batch = ring.poll(250)
                if batch:
                    yield from self.handle_batch(batch)
                lost.poll(every_s=1.0)
                if batch and self.batch_s > 0:
                    # let records gather: one wake-up per batch, not one per record
                    self.stopping.wait(self.batch_s)
            # what is already in the ring when stop() comes is still reported
            yield from self.handle_batch(ring.poll(0))
        finally:
            self._leave_events()

    def handle_batch(self, batch: list[bytes]) -> Iterable[Event]:
        for raw in batch:
            event = self.handle(raw)
            if event is not None:
                yield event

    def handle(self, raw: bytes) -> Event | None:
        raise NotImplementedError
