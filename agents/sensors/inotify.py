"""File create/modify/delete/rename/chmod events from Linux inotify, through ctypes on libc.

Why inotify (and not a watchdog-style library): it is in every Linux kernel, needs no privileges
for files the agent can read, costs nothing while nothing happens, and the whole binding is four
libc calls. Why not fanotify: it needs CAP_SYS_ADMIN and, without FAN_REPORT_FID, gives no
create/delete/rename at all.

Mapping (one contract event per kernel event, except renames):

    IN_CREATE                      -> create (with mode, and size for regular files)
    IN_CLOSE_WRITE                 -> modify: one per write session, with size, mode and, when
                                      size <= `hash_max_bytes` (1 MiB), sha256
    IN_DELETE                      -> delete
    IN_MOVED_FROM + IN_MOVED_TO    -> rename (path, new_path), paired by cookie; a move out of
                                      the watched tree is a delete, a move into it a create
    IN_ATTRIB                      -> chmod with the octal mode ("0644"), only when the mode
                                      changed (a bounded cache of modes; touch/chown are dropped)
    IN_Q_OVERFLOW                  -> counter "lost" and a warning: events were dropped

Options: `paths` (required; directories are watched, recursively when `recursive` (True); a file
is watched through its parent directory so that editors that replace files stay covered),
`exclude` (glob patterns matched against the full path and the base name), `hash_max_bytes`.

Known limits: inotify reports no pid/exe; a directory that appears (mkdir, move in) is scanned
right after its watch is added and its entries reported as creates, but a file written and closed
in that short window gives a create without the modify; watches are limited by
/proc/sys/fs/inotify/max_user_watches (a failure is counted in "watch_failed" and logged).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import hashlib
import os
import select
import stat
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agents.sensors.base import Event, Sensor, SensorUnavailable, utc_now
from sentinel.logs import get_logger

log = get_logger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (
    IN_CREATE
    | IN_CLOSE_WRITE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
# below a configured path, a symlink to a directory is an entry, not a directory to descend
NOFOLLOW = IN_DONT_FOLLOW
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name[len]
READ_SIZE = 256 * 1024
POLL_MS = 250  # idle wait: stop() takes effect within this
PAIR_MS = 20  # how long an IN_MOVED_FROM waits for its IN_MOVED_TO in a later read
MODE_CACHE = 65536  # paths whose mode is remembered (to report chmod only on change)
SYNTHETIC_MAX = 10000  # entries reported as creates when a directory appears
SYNTHETIC_TTL_S = 5.0


@dataclass
class _Pending:
    cookie: int
    path: str
    isdir: bool
    deadline: float


class _Libc:
    """The three inotify calls of libc, with errno."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        self.init1 = lib.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = lib.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = lib.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


class InotifySensor(Sensor):
    name = "inotify"
    version = "0.1.0"
    kinds = ("file",)

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        raw = self.option("paths", [])
        paths = [raw] if isinstance(raw, str) else list(raw or [])
        self.paths = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
        self.recursive = bool(self.option("recursive", True))
        excl = self.option("exclude", [])
        self.exclude = [excl] if isinstance(excl, str) else [str(p) for p in excl or []]
        self.hash_max_bytes = int(self.option("hash_max_bytes", 1024 * 1024))
        self._libc: _Libc | None = None
        self._fd = -1
        self._wd_path: dict[int, str] = {}  # wd -> directory path
        self._path_wd: dict[str, int] = {}
        self._only: dict[int, set[str]] = {}  # wd -> names to report (a watched file's parent)
        self._modes: OrderedDict[str, str] = OrderedDict()
        self._synthetic: dict[str, float] = {}  # path reported as created by a directory scan
        self._pending: _Pending | None = None

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        missing: list[str] = []
        if not sys.platform.startswith("linux"):
            return [f"inotify needs Linux (this is {sys.platform})"]
        if not self.paths:
            missing.append("option 'paths' is required: the files or directories to watch")
        for path in self.paths:
            if not os.path.exists(path):
                missing.append(f"path {path} does not exist")
            elif not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
                missing.append(f"path {path} is not readable by uid {os.geteuid()}")
        if self.hash_max_bytes < 0:
            missing.append(f"option 'hash_max_bytes' must be >= 0, got {self.hash_max_bytes}")
        try:
            _Libc()
        except (OSError, AttributeError) as exc:
            missing.append(f"libc with inotify_init1 is not loadable: {exc}")
        return missing

    def start(self) -> None:
        super().start()
        self._libc = _Libc()
        fd = self._libc.init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            hint = " (raise fs.inotify.max_user_instances)" if err == errno.EMFILE else ""
            raise SensorUnavailable(f"{self.name}: inotify_init1: {os.strerror(err)}{hint}")
        self._fd = fd
        for root in self.paths:
            if os.path.isdir(root):
                self._watch_tree(root, report=False)
                self._remember_mode(root)
            else:
                parent, name = os.path.split(root)
                wd = self._add_watch(parent)
                if wd is not None and wd in self._only:
                    self._only[wd].add(name)
                self._remember_mode(root)
        if not self._wd_path:
            self._close()
            raise SensorUnavailable(f"{self.name}: no watch could be added on {self.paths}")
        log.info("inotify.started", paths=self.paths, watches=len(self._wd_path))

    def events(self) -> Iterator[Event]:
        if self._fd < 0:
            self.start()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self.stopping.is_set():
                timeout = PAIR_MS if self._pending else POLL_MS
                if not poller.poll(timeout):
                    if self._pending and time.monotonic() >= self._pending.deadline:
                        yield from self._flush_pending()
                    self._expire_synthetic()
                    continue
                try:
                    data = os.read(self._fd, READ_SIZE)
                except BlockingIOError:
                    continue
                for wd, mask, cookie, name in self._parse(data):
                    yield from self._handle(wd, mask, cookie, name)
                if self._pending:
                    self._pending.deadline = time.monotonic() + PAIR_MS / 1000
            if self._pending:
                yield from self._flush_pending()
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._wd_path.clear()
        self._path_wd.clear()
        self._only.clear()

    # -- watches ----------------------------------------------------------------------------
    def _excluded(self, path: str) -> bool:
        base = os.path.basename(path)
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(base, p) for p in self.exclude)

    def _add_watch(self, path: str, *, full: bool = False) -> int | None:
        assert self._libc is not None
        mask = WATCH_MASK if path in self.paths else WATCH_MASK | NOFOLLOW
        wd = int(self._libc.add_watch(self._fd, os.fsencode(path), mask))
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return None  # gone (or replaced) before we got to it
            self.count("watch_failed")
            hint = " (raise fs.inotify.max_user_watches)" if err == errno.ENOSPC else ""
            log.warning("inotify.watch_failed", path=path, error=os.strerror(err) + hint)
            return None
        old = self._wd_path.get(wd)
        if old is not None and old != path:
            self._path_wd.pop(old, None)
        self._wd_path[wd] = path
        self._path_wd[path] = wd
        if full:
            self._only.pop(wd, None)
        elif wd not in self._only and old is None:
            self._only[wd] = set()
        return wd

    def _watch_tree(self, root: str, *, report: bool) -> list[Event]:
        """Watch `root` (and, when recursive, its subdirectories). With `report`, return creates
        for every entry found: the directory just appeared and its entries may predate the watch.
        """
        found: list[Event] = []
        stack = [root]
        while stack:
            top = stack.pop()
            if self._add_watch(top, full=True) is None:
                continue
            try:
                with os.scandir(top) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                if self._excluded(entry.path):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                isdir = stat.S_ISDIR(st.st_mode)
                if isdir and self.recursive:
                    stack.append(entry.path)
                if len(self._modes) < MODE_CACHE:
                    self._modes[entry.path] = _mode(st)
                if report:
                    if len(found) >= SYNTHETIC_MAX:
                        self.count("synthetic_truncated")
                        continue
                    self._synthetic[entry.path] = time.monotonic()
                    found.append(self._file_event("create", entry.path, st))
        return found

    def _unwatch_tree(self, root: str) -> None:
        assert self._libc is not None
        prefix = root + os.sep
        for path in [p for p in self._path_wd if p == root or p.startswith(prefix)]:
            wd = self._path_wd.pop(path)
            self._wd_path.pop(wd, None)
            self._only.pop(wd, None)
            self._libc.rm_watch(self._fd, wd)

    def _moved_tree(self, old: str, new: str) -> None:
        prefix = old + os.sep
        for path in [p for p in self._path_wd if p == old or p.startswith(prefix)]:
            wd = self._path_wd.pop(path)
            moved = new + path[len(old) :]
            self._wd_path[wd] = moved
            self._path_wd[moved] = wd
        for path in [p for p in self._modes if p == old or p.startswith(prefix)]:
            self._modes[new + path[len(old) :]] = self._modes.pop(path)

    # -- events -----------------------------------------------------------------------------
    @staticmethod
    def _parse(data: bytes) -> Iterator[tuple[int, int, int, str]]:
        offset, end = 0, len(data)
        while offset + HEADER.size <= end:
            wd, mask, cookie, length = HEADER.unpack_from(data, offset)
            offset += HEADER.size
            name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            yield wd, mask, cookie, os.fsdecode(name)

    def _handle(self, wd: int, mask: int, cookie: int, name: str) -> Iterator[Event]:
        if self._pending and not (mask & IN_MOVED_TO and cookie == self._pending.cookie):
            yield from self._flush_pending()
        if mask & IN_Q_OVERFLOW:
            self.count("lost")
            log.warning(
                "inotify.overflow",
                detail="kernel queue overflowed; file events were lost "
                "(raise fs.inotify.max_queued_events)",
                lost_total=self.counters["lost"],
            )
            return
        if mask & IN_IGNORED:
            path = self._wd_path.pop(wd, None)
            if path is not None and self._path_wd.get(path) == wd:
                del self._path_wd[path]
            self._only.pop(wd, None)
            return
        base = self._wd_path.get(wd)
        if base is None:
            return  # a watch we dropped; its last events are still in the queue
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            if base in self.paths:
                log.warning("inotify.root_gone", path=base, mask=hex(mask))
            return  # the parent's watch reports the delete or move of a subdirectory
        only = self._only.get(wd)
        if only is not None and name not in only:
            return
        path = os.path.join(base, name) if name else base
        isdir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            if self._excluded(path):
                return
            self._pending = _Pending(cookie, path, isdir, time.monotonic() + PAIR_MS / 1000)
            return
        if mask & IN_MOVED_TO:
            yield from self._moved_to(cookie, path, isdir)
            return
        if self._excluded(path):
            return
        if mask & IN_CREATE:
            yield from self._created(path, isdir)
        elif mask & IN_CLOSE_WRITE:
            yield self._modified(path)
        elif mask & IN_DELETE:
            self._modes.pop(path, None)
            self._synthetic.pop(path, None)
            yield {"kind": "file", "ts": utc_now(), "file": {"action": "delete", "path": path}}
        elif mask & IN_ATTRIB:
            event = self._attrib(path)
            if event is not None:
                yield event

    def _created(self, path: str, isdir: bool) -> Iterator[Event]:
        if self._synthetic.pop(path, None) is not None:
            return  # already reported by the scan of its new parent directory
        st = self._lstat(path)
        if st is not None:
            self._remember_mode(path, st)
        yield self._file_event("create", path, st)
        if isdir and self.recursive and st is not None and stat.S_ISDIR(st.st_mode):
            yield from self._watch_tree(path, report=True)

    def _moved_to(self, cookie: int, path: str, isdir: bool) -> Iterator[Event]:
        pending, self._pending = self._pending, None
        if pending is not None and pending.cookie == cookie:
            if self._excluded(path):  # moved onto an excluded name: gone from our view
                self._forget(pending.path, pending.isdir)
                yield self._simple("delete", pending.path)
                return
            if isdir:
                self._moved_tree(pending.path, path)
            elif pending.path in self._modes:
                self._modes[path] = self._modes.pop(pending.path)
            file: dict[str, Any] = {"action": "rename", "path": pending.path, "new_path": path}
            yield {"kind": "file", "ts": utc_now(), "file": file}
            return
        if self._excluded(path):
            return
        st = self._lstat(path)  # moved in from outside the watched tree: a create here
        if st is not None:
            self._remember_mode(path, st)
        yield self._file_event("create", path, st)
        if isdir and self.recursive and st is not None and stat.S_ISDIR(st.st_mode):
            yield from self._watch_tree(path, report=True)

    def _flush_pending(self) -> Iterator[Event]:
        """An IN_MOVED_FROM with no IN_MOVED_TO: moved out of the watched tree, a delete here."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._forget(pending.path, pending.isdir)
        yield self._simple("delete", pending.path)

    def _forget(self, path: str, isdir: bool) -> None:
        self._modes.pop(path, None)
        if isdir:
            self._unwatch_tree(path)

    def _modified(self, path: str) -> Event:
        st = self._lstat(path)
        event = self._file_event("modify", path, st)
        if st is not None:
            self._remember_mode(path, st)
            if stat.S_ISREG(st.st_mode) and st.st_size <= self.hash_max_bytes:
                digest = self._sha256(path)
                if digest is not None:
                    event["file"]["sha256"] = digest
        return event

    def _attrib(self, path: str) -> Event | None:
        st = self._lstat(path)
        if st is None:
            return None
        mode = _mode(st)
        if self._modes.get(path) == mode:
            self._modes.move_to_end(path)
            return None  # touch, chown, link count: not a chmod
        self._remember_mode(path, st)
        file = {"action": "chmod", "path": path, "mode": mode}
        return {"kind": "file", "ts": utc_now(), "file": file}

    # -- helpers ----------------------------------------------------------------------------
    def _file_event(self, action: str, path: str, st: os.stat_result | None) -> Event:
        file: dict[str, Any] = {"action": action, "path": path}
        if st is not None:
            file["mode"] = _mode(st)
            if stat.S_ISREG(st.st_mode):
                file["size"] = st.st_size
        return {"kind": "file", "ts": utc_now(), "file": file}

    @staticmethod
    def _simple(action: str, path: str) -> Event:
        return {"kind": "file", "ts": utc_now(), "file": {"action": action, "path": path}}

    def _remember_mode(self, path: str, st: os.stat_result | None = None) -> None:
        if st is None:
            st = self._lstat(path)
            if st is None:
                return
        self._modes[path] = _mode(st)
        self._modes.move_to_end(path)
        while len(self._modes) > MODE_CACHE:
            self._modes.popitem(last=False)

    def _expire_synthetic(self) -> None:
        if self._synthetic:
            cutoff = time.monotonic() - SYNTHETIC_TTL_S
            for path in [p for p, t in self._synthetic.items() if t < cutoff]:
                del self._synthetic[path]

    @staticmethod
    def _lstat(path: str) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except OSError:
            return None

    def _sha256(self, path: str) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            digest = hashlib.sha256()
            left = self.hash_max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            if left <= 0:
                return None  # grew past the limit while we read it
            return digest.hexdigest()
        except OSError:
            return None
        finally:
            os.close(fd)
