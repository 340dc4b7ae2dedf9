"""Process exec/exit events by polling /proc: the sensor that needs no eBPF, no audit, no module.

Why polling: it runs on any Linux (containers, old kernels, no CAP_BPF) at a known, small cost.
What it loses: processes that start and end between two scans (default 0.25 s) are never seen,
and a process that is gone before its files could be read is counted in the
`vanished_before_read` counter instead of reported.

How a scan stays cheap: one `os.scandir("/proc")` lists the pids together with the inode number
of each `/proc/<pid>` directory (the `d_ino` of getdents, free). A process keeps its /proc inode
for its whole life while a new process with the same pid gets a new one, so an inode change is the
cheap hint of pid reuse; the start time in `/proc/<pid>/stat` then decides (processes are keyed by
pid and start time). Per known process a scan does one `readlink(/proc/<pid>/exe)` (a few µs) to
see an exec without fork (same pid and start time, another executable); the full read (stat,
cmdline, status, cwd) happens only for new processes. Kernel threads (PF_KTHREAD) are skipped
unless option `kernel_threads` is true, in which case their exe is the comm in brackets.

Options: `interval_s` (0.25), `exit_events` (True), `emit_existing` (False: processes running at
start are a baseline), `kernel_threads` (False), `detect_exec` (True: the per-scan readlink).
"""

from __future__ import annotations

import errno
import os
import pwd
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agents.sensors.base import (
    Event,
    PollingSensor,
    SensorUnavailable,
    utc_from_epoch,
    utc_now,
)
from sentinel.logs import get_logger

log = get_logger(__name__)

PROC = "/proc"
PF_KTHREAD = 0x00200000
CMDLINE_MAX = 32768  # bytes of argv kept; a longer command line is cut there
EXEC_SETTLE_S = 0.002  # a second look at an empty argv (a process caught inside execve)
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class _Proc:
    """What the sensor remembers of one live process (keyed by pid in the table)."""

    start: int  # start time in clock ticks since boot: (pid, start) identifies a process
    ino: int  # inode of /proc/<pid>, the cheap pid-reuse hint
    exe: str
    kernel: bool = False
    exe_readable: bool = True  # False when readlink(exe) is refused (sensor not root)
    gone: bool = False  # exit already reported (zombie), waiting for the pid to vanish


@dataclass
class _Stat:
    comm: str
    state: str
    ppid: int
    flags: int
    start: int


class _Vanished(Exception):
    """The process ended while we were reading it."""


def _read_stat(pid: int) -> _Stat:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise _Vanished from None
    # comm may contain spaces and parentheses: it runs from the first '(' to the last ')'
    left, right = raw.find(b"("), raw.rfind(b")")
    if left < 0 or right < 0:
        raise _Vanished
    fields = raw[right + 2 :].split()
    return _Stat(
        comm=raw[left + 1 : right].decode(errors="replace"),
        state=fields[0].decode(),
        ppid=int(fields[1]),
        flags=int(fields[6]),
        start=int(fields[19]),
    )


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_cmdline(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            raw = f.read(CMDLINE_MAX)
    except OSError:
        return ""
    return " ".join(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if a)


def _read_real_uid(pid: int) -> int | None:
    try:
        with open(f"{PROC}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@lru_cache(maxsize=1024)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _boot_epoch() -> float:
    """The wall-clock time of boot, to turn /proc start ticks into timestamps."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class ProcfsSensor(PollingSensor):
    name = "procfs"
    version = "0.1.0"
    kinds = ("proc",)

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.interval_s = float(self.option("interval_s", 0.25))
        self.exit_events = bool(self.option("exit_events", True))
        self.emit_existing = bool(self.option("emit_existing", False))
        self.kernel_threads = bool(self.option("kernel_threads", False))
        self.detect_exec = bool(self.option("detect_exec", True))
        self._table: dict[int, _Proc] = {}

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        missing: list[str] = []
        if not sys.platform.startswith("linux"):
            missing.append(f"Linux /proc is required (this is {sys.platform})")
        elif not os.path.exists(f"{PROC}/self/stat"):
            missing.append(f"{PROC} is not mounted (no {PROC}/self/stat)")
        return missing

    def start(self) -> None:
        super().start()
        if self.interval_s <= 0:
            raise SensorUnavailable(f"{self.name}: interval_s must be > 0, got {self.interval_s}")
        if os.geteuid() != 0:
            log.warning(
                "procfs.not_root",
                detail="exe of other users' processes is unreadable; argv[0] is used instead",
            )
        self._table.clear()
        self._backlog = self._scan(baseline=True)
        self._started = True
        log.info("procfs.started", processes=len(self._table), interval_s=self.interval_s)

    def poll_once(self) -> list[Event]:
        """One scan of /proc against the table: the events since the previous scan, in order."""
        return self._scan(baseline=False)

    # -- the scan ---------------------------------------------------------------------------
    def _scan(self, *, baseline: bool) -> list[Event]:
        self.count("scans")
        listed: dict[int, int] = {}
        with os.scandir(PROC) as it:
            for entry in it:
                if entry.name.isdigit():
                    listed[int(entry.name)] = entry.inode()

        exits: list[Event] = []
        execs: list[tuple[float, Event]] = []
        boot = _boot_epoch()

        for pid in [p for p in self._table if p not in listed]:
            old = self._table.pop(pid)
            if not old.gone and (self.kernel_threads or not old.kernel):
                exits.append(self._exit(pid, old))

        new_pids: list[int] = []
        for pid, ino in listed.items():
            known = self._table.get(pid)
            if known is None:
                new_pids.append(pid)
            elif known.ino != ino and not self._same_process(pid, ino, known, exits, new_pids):
                continue
            elif self.detect_exec and not (known.kernel or known.gone) and known.exe_readable:
                self._check_exe(pid, known, exits, execs)

        for pid in new_pids:
            found = self._read_new(pid, listed[pid], boot)
            if found is not None and (not baseline or self.emit_existing):
                execs.append(found)

        execs.sort(key=lambda item: item[0])
        return (exits if self.exit_events else []) + [event for _, event in execs]

    def _same_process(
        self, pid: int, ino: int, known: _Proc, exits: list[Event], new: list[int]
    ) -> bool:
        """The /proc inode changed: pid reuse (exit, and the pid counts as new), unless the
        start time says it is the same process whose dentry was evicted and rebuilt.

        Start times have clock-tick resolution (10 ms): a reuse within one tick passes as the
        same process, and then the exe check reports the new program as an exec in place.
        """
        try:
            stat = _read_stat(pid)
        except _Vanished:
            stat = None
        if stat is not None and stat.start == known.start:
            known.ino = ino
            return True
        del self._table[pid]
        if not known.gone and (self.kernel_threads or not known.kernel):
            exits.append(self._exit(pid, known))
        new.append(pid)
        return False

    def _check_exe(
        self, pid: int, known: _Proc, exits: list[Event], execs: list[tuple[float, Event]]
    ) -> None:
        try:
            exe = os.readlink(f"{PROC}/{pid}/exe")
        except OSError as exc:
            if exc.errno == errno.EACCES:
                known.exe_readable = False
                return
            # ENOENT: a zombie (exited, not yet reaped) or gone since the listing
            known.gone = True
            exits.append(self._exit(pid, known))
            return
        if exe == known.exe:
            return
        try:
            stat = _read_stat(pid)
        except _Vanished:
            return  # the next scan reports the exit
        if stat.start != known.start:  # reused pid with the same /proc inode: unlikely, handled
            exits.append(self._exit(pid, known))
            del self._table[pid]
            found = self._read_new(pid, known.ino, _boot_epoch())
            if found is not None:
                execs.append(found)
            return
        known.exe = exe
        self.count("exec_in_place")
        execs.append((time.time(), self._exec_event(pid, stat, exe, utc_now())))

    def _read_new(self, pid: int, ino: int, boot: float) -> tuple[float, Event] | None:
        """Read a process seen for the first time; remember it; its exec event (None: skip)."""
        try:
            stat = _read_stat(pid)
        except _Vanished:
            self.count("vanished_before_read")
            return None
        kernel = bool(stat.flags & PF_KTHREAD)
        if kernel:
            exe = f"[{stat.comm}]"
            self._table[pid] = _Proc(stat.start, ino, exe, kernel=True)
            if not self.kernel_threads:
                return None
        elif stat.state in ("Z", "X"):
            # exited before we could read it: the exe link is gone already
            self.count("vanished_before_read")
            self._table[pid] = _Proc(stat.start, ino, f"[{stat.comm}]", gone=True)
            return None
        else:
            readable = True
            try:
                exe = os.readlink(f"{PROC}/{pid}/exe")
            except OSError as exc:
                if exc.errno != errno.EACCES:  # exiting right now
                    self.count("vanished_before_read")
                    self._table[pid] = _Proc(stat.start, ino, f"[{stat.comm}]", gone=True)
                    return None
                readable = False
                cmd = _read_cmdline(pid)
                exe = (cmd.split(" ", 1)[0] if cmd else "") or f"[{stat.comm}]"
            self._table[pid] = _Proc(stat.start, ino, exe, exe_readable=readable)
        started = boot + stat.start / CLK_TCK
        return started, self._exec_event(pid, stat, exe, utc_from_epoch(started))

    def _exec_event(self, pid: int, stat: _Stat, exe: str, ts: str) -> Event:
        proc: dict[str, Any] = {
            "action": "exec",
            "pid": pid,
            "ppid": stat.ppid,
            "exe": exe,
            "cmdline": _read_cmdline(pid),
        }
        if not proc["cmdline"] and not stat.flags & PF_KTHREAD:
            # caught inside execve: the new exe is set before the new argv is; look once more
            time.sleep(EXEC_SETTLE_S)
            proc["cmdline"] = _read_cmdline(pid)
        uid = _read_real_uid(pid)
        if uid is not None:
            proc["uid"] = uid
            proc["user"] = _user_name(uid)
        parent = self._table.get(stat.ppid)
        parent_exe = parent.exe if parent is not None else None
        if parent_exe is None and stat.ppid > 0:
            parent_exe = _readlink(f"{PROC}/{stat.ppid}/exe")
        if parent_exe:
            proc["parent_exe"] = parent_exe
        cwd = _readlink(f"{PROC}/{pid}/cwd")
        if cwd:
            proc["cwd"] = cwd
        return {"kind": "proc", "ts": ts, "proc": proc}

    def _exit(self, pid: int, old: _Proc) -> Event:
        self.count("exits")
        return {
            "kind": "proc",
            "ts": utc_now(),
            "proc": {"action": "exit", "pid": pid, "exe": old.exe},
        }
