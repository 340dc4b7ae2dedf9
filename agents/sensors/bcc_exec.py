"""bcc-exec: every process execution and exit, from kernel tracepoints, with none missed.

Where the procfs sensor samples /proc and misses anything that lives shorter than its poll
interval, this one is told by the kernel about each exec and exit as it happens, through a
BPF ring buffer, so a `/bin/true` that lives a millisecond is still reported.

Kernel side (`BPF_SOURCE`), tracepoints only (no kprobes on our kernels) and no kernel struct
reads (the installed headers are older than the running kernel, so struct layouts cannot be
trusted; tracepoint arguments are laid out from tracefs at compile time and are safe):

- `sched:sched_process_fork` remembers child pid -> parent tgid (the ppid at exec time);
- `syscalls:sys_enter_execve(at)` copies up to `MAXARGS` argv strings from user memory into a
  per-thread map entry (bounded, unrolled, so the verifier accepts it);
- `sched:sched_process_exec` (the exec succeeded) emits pid, filename, comm, uid, the saved
  argv and the ppid as one variable-length ring-buffer record;
- `sched:sched_process_exit` emits the exit of a whole process (last thread, or the leader
  where the kernel's tracepoint has no `group_dead`);
- a full ring buffer bumps the `lost` array, which the user side reports as the "lost"
  counter and a warning.

User side: the record becomes a `proc` event; `user` from the uid (cached), `parent_exe` from
earlier exec events of the parent (else /proc/<ppid>/exe), `cwd` from /proc/<pid>/cwd while the
process is still there. Options: `exit_events` (default true), `ring_pages` (ring buffer size
in 4 KiB pages, a power of two, default 2048 = 8 MiB), `batch_ms` (how long to let records
gather between drains, default 50), `cwd` (default true).
"""

from __future__ import annotations

import os
import pwd
import struct
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from agents.sensors._bcc import (
    LOST_COUNTER_C,
    TRACEFS,
    BoundedCache,
    PpidCache,
    RingSensor,
    bcc_missing,
    proc_link,
)
from agents.sensors.base import Event
from sentinel.logs import get_logger

log = get_logger(__name__)

MAXARGS = 20
ARGSIZE = 256
ARGBUF = 2048  # argv bytes kept per exec (plus up to one ARGSIZE of slack)

TRACEPOINTS = (
    "syscalls:sys_enter_execve",
    "syscalls:sys_exit_execve",
    "syscalls:sys_enter_execveat",
    "syscalls:sys_exit_execveat",
    "sched:sched_process_fork",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
)

T_EXEC = 1
T_EXIT = 2

BPF_SOURCE = (
    LOST_COUNTER_C
    + r"""
#define T_EXEC 1
#define T_EXIT 2

struct argv_t {
    u32 len;        /* bytes used in buf: NUL-separated strings */
    u32 argc;
    u32 truncated;  /* more args, or longer ones, than were kept */
    u32 pad;
    char buf[ARGBUF + ARGSIZE];
};

struct exec_ev {    /* variable length: only args_len bytes of args are sent */
    u32 type;
    u32 pid;        /* tgid after exec */
    u32 tid;        /* the thread that called execve (old_pid) */
    u32 ppid;       /* from the fork map; 0 when not seen */
    u32 uid;
    u32 gid;
    u32 argc;
    u32 truncated;
    u32 args_len;
    u32 filename_len; /* bytes before the filename's NUL */
    u64 ts;
    char comm[16];
    char filename[FILENAME_LEN];
    char args[ARGBUF + ARGSIZE];
};

struct exit_ev {
    u32 type;
    u32 pid;
    u32 ppid;
    u32 uid;
    u64 ts;
    char comm[16];
};

BPF_PERCPU_ARRAY(scratch_argv, struct argv_t, 1);
BPF_PERCPU_ARRAY(scratch_ev, struct exec_ev, 1);
BPF_TABLE("lru_hash", u32, struct argv_t, argv_by_tid, 8192);
BPF_TABLE("lru_hash", u32, u32, parent_of, PARENT_MAP_SIZE);
BPF_RINGBUF_OUTPUT(events, RING_PAGES);

static __always_inline int save_argv(const char *const *argv) {
    u32 zero = 0;
    struct argv_t *a = scratch_argv.lookup(&zero);
    if (!a) return 0;
    u32 len = 0, argc = 0;
    a->truncated = 0;
    #pragma unroll
    for (int i = 0; i < MAXARGS; i++) {
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) || !p) goto done;
        if (len > ARGBUF) { a->truncated = 1; goto done; }
        int n = bpf_probe_read_user_str(&a->buf[len], ARGSIZE, p);
        if (n <= 0) goto done;
        if (n == ARGSIZE) a->truncated = 1;
        len += n;
        argc++;
    }
    {
        const char *p = 0;
        if (!bpf_probe_read_user(&p, sizeof(p), &argv[MAXARGS]) && p) a->truncated = 1;
    }
done:
    a->len = len;
    a->argc = argc;
    u32 tid = bpf_get_current_pid_tgid();
    argv_by_tid.update(&tid, a);
    return 0;
}

static __always_inline int drop_argv(void) {
    u32 tid = bpf_get_current_pid_tgid();
    argv_by_tid.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve) { return save_argv(args->argv); }
TRACEPOINT_PROBE(syscalls, sys_enter_execveat) { return save_argv(args->argv); }
/* after a successful exec the entry is already gone; after a failed one this drops it */
TRACEPOINT_PROBE(syscalls, sys_exit_execve) { return drop_argv(); }
TRACEPOINT_PROBE(syscalls, sys_exit_execveat) { return drop_argv(); }

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 child = args->child_pid;
    u32 parent = bpf_get_current_pid_tgid() >> 32;  /* the tgid, not the forking thread */
    parent_of.update(&child, &parent);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 zero = 0;
    struct exec_ev *e = scratch_ev.lookup(&zero);
    if (!e) return 0;
    u64 ug = bpf_get_current_uid_gid();
    u32 pid = args->pid;
    u32 old = args->old_pid;
    e->type = T_EXEC;
    e->pid = pid;
    e->tid = old;
    e->uid = ug;
    e->gid = ug >> 32;
    e->ts = bpf_ktime_get_ns();
    u32 *pp = parent_of.lookup(&pid);
    e->ppid = pp ? *pp : 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    /* TP_DATA_LOC_READ_STR, keeping the length: the user side need not look for the NUL */
    int fn_len = bpf_probe_read_kernel_str(
        &e->filename, sizeof(e->filename), (char *)args + (args->data_loc_filename & 0xFFFF));
    e->filename_len = fn_len > 0 ? fn_len - 1 : 0;
    u32 len = 0;
    e->argc = 0;
    e->truncated = 0;
    struct argv_t *a = argv_by_tid.lookup(&old);
    if (a) {
        len = a->len;
        if (len > ARGBUF + ARGSIZE) len = ARGBUF + ARGSIZE;
        e->argc = a->argc;
        e->truncated = a->truncated;
        if (len > 0) bpf_probe_read_kernel(&e->args, len, &a->buf);
        argv_by_tid.delete(&old);
    }
    e->args_len = len;
    u32 size = offsetof(struct exec_ev, args) + len;
    if (size > sizeof(*e)) size = sizeof(*e);
    if (events.ringbuf_output(e, size, 0)) count_lost();
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = pt, tgid = pt >> 32;
    u32 ppid = 0;
    u32 *pp = parent_of.lookup(&tid);
    if (!pp) pp = parent_of.lookup(&tgid);
    if (pp) ppid = *pp;
    parent_of.delete(&tid);
#ifdef HAVE_GROUP_DEAD
    if (!args->group_dead) return 0;       /* other threads live on */
    parent_of.delete(&tgid);
#else
    if (tid != tgid) return 0;             /* a thread, not the process */
#endif
#if EMIT_EXIT
    struct exit_ev *x = events.ringbuf_reserve(sizeof(struct exit_ev));
    if (!x) { count_lost(); return 0; }
    x->type = T_EXIT;
    x->pid = tgid;
    x->ppid = ppid;
    x->uid = (u32)bpf_get_current_uid_gid();
    x->ts = bpf_ktime_get_ns();
    bpf_get_current_comm(&x->comm, sizeof(x->comm));
    events.ringbuf_submit(x, 0);
#endif
    return 0;
}
"""
)

FILENAME_LEN = 256
# record layouts (little-endian, as `struct exec_ev` / `struct exit_ev` above)
_EXEC_HEAD = struct.Struct(f"<10IQ16s{FILENAME_LEN}s")  # then args_len bytes of argv
_EXEC_ARGS = _EXEC_HEAD.size
_EXIT = struct.Struct("<4IQ16s")
# what handle_batch() unpacks: exec pid, ppid, uid, argc, truncated, args_len, filename_len,
# ts (comm at 48, filename at 64); exit pid, ppid, uid, ts (comm at 24)
_EXEC_FIXED = struct.Struct("<4xI4xII4xIIIIQ")
_EXIT_FIXED = struct.Struct("<4xIIIQ")
_EXIT_KIND = bytes([T_EXIT])
_PID = struct.Struct("<4xI")


def _exits_in(batch: list[bytes]) -> set[int]:
    """The pids of the exit records in a batch."""
    unpack = _PID.unpack_from
    return {unpack(r)[0] for r in batch if r[:1] == _EXIT_KIND and len(r) >= _EXIT.size}


class ExecRecord(NamedTuple):
    """One exec as the kernel reported it (a named tuple: cheap at 10k execs a second)."""

    pid: int
    tid: int
    ppid: int  # 0 = the fork was not seen
    uid: int
    gid: int
    ktime_ns: int
    comm: str
    filename: str
    argv: list[str]
    truncated: bool = False


class ExitRecord(NamedTuple):
    pid: int
    ppid: int
    uid: int
    ktime_ns: int
    comm: str


def _c(raw: bytes) -> str:
    """A NUL-padded C char array as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def decode(raw: bytes) -> ExecRecord | ExitRecord | None:
    """A ring-buffer record (see `struct exec_ev` / `struct exit_ev`) as a Python object."""
    kind = raw[0] if raw else 0
    if kind == T_EXEC and len(raw) >= _EXEC_ARGS:
        (_, pid, tid, ppid, uid, gid, argc, truncated, args_len, _fn_len, ts, comm, fn) = (
            _EXEC_HEAD.unpack_from(raw)
        )
        argv = (
            raw[_EXEC_ARGS : _EXEC_ARGS + args_len]
            .decode("utf-8", "backslashreplace")
            .split("\0")[:argc]
            if argc
            else []
        )
        return ExecRecord(pid, tid, ppid, uid, gid, ts, _c(comm), _c(fn), argv, truncated != 0)
    if kind == T_EXIT and len(raw) >= _EXIT.size:
        _, pid, ppid, uid, ts, comm = _EXIT.unpack_from(raw)
        return ExitRecord(pid, ppid, uid, ts, _c(comm))
    return None


def exec_event(
    rec: ExecRecord,
    *,
    ts: str,
    ppid: int | None = None,
    user: str | None = None,
    parent_exe: str | None = None,
    cwd: str | None = None,
    exe: str | None = None,
) -> Event:
    """The partial contract event for an exec record plus what user space looked up."""
    proc: dict[str, Any] = {
        "action": "exec",
        "pid": rec.pid,
        "exe": exe or rec.filename or rec.comm or "?",
        "uid": rec.uid,
    }
    if rec.argv:
        proc["cmdline"] = " ".join(rec.argv)
    elif rec.comm:
        proc["cmdline"] = rec.comm
    if ppid is not None:
        proc["ppid"] = ppid
    if user is not None:
        proc["user"] = user
    if parent_exe:
        proc["parent_exe"] = parent_exe
    if cwd:
        proc["cwd"] = cwd
    return {"kind": "proc", "ts": ts, "proc": proc}


def exit_event(
    rec: ExitRecord, *, ts: str, exe: str | None, ppid: int | None, user: str | None
) -> Event:
    proc: dict[str, Any] = {
        "action": "exit",
        "pid": rec.pid,
        "exe": exe or rec.comm or "?",
        "uid": rec.uid,
    }
    if ppid is not None:
        proc["ppid"] = ppid
    if user is not None:
        proc["user"] = user
    return {"kind": "proc", "ts": ts, "proc": proc}


def _has_group_dead() -> bool:
    try:
        text = (TRACEFS / "events/sched/sched_process_exit/format").read_text()
    except OSError:
        return False
    return " group_dead;" in text


class BccExecSensor(RingSensor):
    name: ClassVar[str] = "bcc-exec"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("proc",)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.exit_events = bool(self.option("exit_events", True))
        self.ring_pages = int(self.option("ring_pages", 2048))
        self.batch_s = float(self.option("batch_ms", 50)) / 1000
        self.want_cwd = bool(self.option("cwd", True))
        self.exes: BoundedCache[int, str] = BoundedCache(32768)
        self.ppids = PpidCache(32768)
        self._users: dict[int, str | None] = {}

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        missing = bcc_missing(TRACEPOINTS)
        pages = self.ring_pages
        if pages <= 0 or pages & (pages - 1):
            missing.append(f"option ring_pages must be a power of two, got {pages}")
        return missing

    def start(self) -> None:
        if self.bpf is not None:
            return
        super().start()  # raises SensorUnavailable with check()'s list
        cflags = [
            f"-DMAXARGS={MAXARGS}",
            f"-DARGSIZE={ARGSIZE}",
            f"-DARGBUF={ARGBUF}",
            f"-DFILENAME_LEN={FILENAME_LEN}",
            f"-DRING_PAGES={self.ring_pages}",
            "-DPARENT_MAP_SIZE=65536",
            # exits are always sent: they retire the pid caches even when not published
            "-DEMIT_EXIT=1",
        ]
        if _has_group_dead():
            cflags.append("-DHAVE_GROUP_DEAD")
        self._load(BPF_SOURCE, cflags, "exec/exit records (ring buffer full)")
        self._seed_exes()
        log.info(
            "sensor started",
            sensor=self.name,
            ring_kib=self.ring_pages * 4,
            exit_events=self.exit_events,
        )

    # -- records to events ------------------------------------------------------------------
    def handle_batch(self, batch: list[bytes]) -> list[Event]:
        """The events of one drained batch, in record order: the hot path.

        The same events as `decode()` + `on_exec()` / `on_exit()` record by record (the tests
        hold the two to each other), fused into one loop over the raw bytes: at 10k execs a
        second (20k records) every allocation and call per record shows, so only the fields
        the events use are unpacked, `comm` is decoded only when it is needed, the caches are
        plain dicts, the timestamp is a cached millisecond prefix plus a prebuilt tail, and the
        rare cases (no ppid from the kernel, a relative filename) go through `on_exec()`.
        The cwd of an exec is read after the loop, and only for processes whose exit is not
        in the batch (a gone process has no /proc entry to ask).
        """
        out: list[Event] = []
        append = out.append
        exes, exes_size = self.exes.data, self.exes.size
        ppid_cache = self.ppids.cache.data
        users = self._users
        exit_events, want_cwd = self.exit_events, self.want_cwd
        unpack_exec, unpack_exit = _EXEC_FIXED.unpack_from, _EXIT_FIXED.unpack_from
        stamps = self._ts
        offset_us, tails, prefix_of = stamps.offset_us, stamps.US_TAILS, stamps.prefix
        last_ms, prefix = -1, ""
        gone: set[int] = set()  # exits seen so far
        exits: set[int] | None = None  # all exits of the batch, for the rare path
        cwd_wanted: list[dict[str, Any]] = []
        for raw in batch:
            kind = raw[0] if raw else 0
            if kind == T_EXIT and len(raw) >= _EXIT.size:
                pid, ppid, uid, ktime = unpack_exit(raw)
                gone.add(pid)
                ppid = ppid or ppid_cache.get(pid)
                # a child that never exec'd runs its parent's image
                exe = exes.pop(pid, None) or (exes.get(ppid) if ppid else None)
                ppid_cache.pop(pid, None)
                if not exit_events:
                    continue
                micros = ktime // 1000 + offset_us
                ms = micros // 1000
                if ms != last_ms:
                    prefix, last_ms = prefix_of(ms), ms
                proc: dict[str, Any] = {
                    "action": "exit",
                    "pid": pid,
                    "exe": exe or _c(raw[24:40]) or "?",
                    "uid": uid,
                }
                if ppid is not None:
                    proc["ppid"] = ppid
                user = users[uid] if uid in users else self.user(uid)
                if user is not None:
                    proc["user"] = user
                append({"kind": "proc", "ts": prefix + tails[micros % 1000], "proc": proc})
            elif kind == T_EXEC and len(raw) >= _EXEC_ARGS:
                pid, ppid, uid, argc, truncated, args_len, fn_len, ktime = unpack_exec(raw)
                # the filename_len bytes before the NUL (a record written otherwise goes through
                # the reference path: exe "" is not absolute)
                exe = (
                    raw[64 : 64 + fn_len].decode("utf-8", "backslashreplace")
                    if fn_len < FILENAME_LEN and raw[64 + fn_len] == 0
                    else ""
                )
                if not ppid or not exe.startswith("/"):
                    # rare: the fork was not seen, or a relative filename: the reference path
                    if exits is None:
                        exits = _exits_in(batch)
                    rec = decode(raw)
                    assert type(rec) is ExecRecord
                    append(self.on_exec(rec, exits))
                    continue
                cmdline: str | None
                if argc:
                    # argc NUL-terminated strings (probe_read_user_str stops at the first NUL):
                    # the NULs but the last become the spaces of the cmdline
                    args = raw[_EXEC_ARGS : _EXEC_ARGS + args_len]
                    if args[-1:] == b"\0" and args.count(0) == argc:
                        cmdline = args[:-1].replace(b"\0", b" ").decode("utf-8", "backslashreplace")
                    else:  # not as the BPF side writes it: the reference split
                        cmdline = " ".join(
                            args.decode("utf-8", "backslashreplace").split("\0")[:argc]
                        )
                else:
                    cmdline = _c(raw[48:64]) or None
                if truncated:
                    self.count("args_truncated")
                parent_exe = exes.get(ppid)
                if parent_exe is None:
                    # "" remembers a parent without an image (a kernel thread), so no re-reads
                    parent_exe = proc_link(ppid, "exe") or ""
                    self.exes.put(ppid, parent_exe)
                if len(exes) >= exes_size and pid not in exes:
                    del exes[next(iter(exes))]  # BoundedCache.put, inline
                exes[pid] = exe
                micros = ktime // 1000 + offset_us
                ms = micros // 1000
                if ms != last_ms:
                    prefix, last_ms = prefix_of(ms), ms
                proc = {"action": "exec", "pid": pid, "exe": exe, "uid": uid}
                if cmdline is not None:
                    proc["cmdline"] = cmdline
                proc["ppid"] = ppid
                user = users[uid] if uid in users else self.user(uid)
                if user is not None:
                    proc["user"] = user
                if parent_exe:
                    proc["parent_exe"] = parent_exe
                if want_cwd:
                    cwd_wanted.append(proc)
                append({"kind": "proc", "ts": prefix + tails[micros % 1000], "proc": proc})
            else:
                self.count("bad_records")
        for proc in cwd_wanted:
            if proc["pid"] not in gone:
                cwd = proc_link(proc["pid"], "cwd")
                if cwd:
                    proc["cwd"] = cwd
        return out

    def handle(self, raw: bytes) -> Event | None:
        """One raw record to its event (None for exits when exit events are off)."""
        return next(iter(self.handle_batch([raw])), None)

    def on_exec(self, rec: ExecRecord, gone: set[int] | frozenset[int] = frozenset()) -> Event:
        pid = rec.pid
        alive = pid not in gone
        ppid: int | None = rec.ppid or (self.ppids.get(pid) if alive else None)
        cwd = proc_link(pid, "cwd") if self.want_cwd and alive else None
        exe = rec.filename
        if not exe.startswith("/"):
            # a relative path ("./x") or none: the kernel's view if the process is still there
            exe = (proc_link(pid, "exe") if alive else None) or (
                os.path.normpath(os.path.join(cwd, exe)) if cwd and exe else exe
            )
        if rec.truncated:
            self.count("args_truncated")
        parent_exe = None
        if ppid:
            parent_exe = self.exes.data.get(ppid)
            if parent_exe is None:
                # "" remembers a parent without an image (a kernel thread), so no re-reads
                parent_exe = proc_link(ppid, "exe") or ""
                self.exes.put(ppid, parent_exe)
        if exe:
            self.exes.put(pid, exe)
        return exec_event(
            rec,
            ts=self._ts.format(rec.ktime_ns),
            ppid=ppid,
            user=self._users[rec.uid] if rec.uid in self._users else self.user(rec.uid),
            parent_exe=parent_exe,
            cwd=cwd,
            exe=exe,
        )

    def on_exit(self, rec: ExitRecord) -> Event | None:
        pid = rec.pid
        exes, ppids = self.exes.data, self.ppids.cache.data  # plain dict operations: hot path
        ppid = rec.ppid or ppids.get(pid)
        # a child that never exec'd runs its parent's image
        exe = exes.pop(pid, None) or (exes.get(ppid) if ppid else None) or None
        ppids.pop(pid, None)
        if not self.exit_events:
            return None
        return exit_event(
            rec, ts=self._ts.format(rec.ktime_ns), exe=exe, ppid=ppid, user=self.user(rec.uid)
        )

    def user(self, uid: int) -> str | None:
        try:
            return self._users[uid]
        except KeyError:
            pass
        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        self._users[uid] = name
        return name

    def _seed_exes(self) -> None:
        """Remember the images of processes that ran before we started (exits, parents)."""
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids[-self.exes.size :]:
            exe = proc_link(pid, "exe")
            if exe:
                self.exes.put(pid, exe)
