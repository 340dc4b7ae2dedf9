"""Authentication sensor: logins, failures, sudo and logouts from the system's auth log.

Why a log and not PAM hooks: sshd, sudo, su and login already write one line per decision to
syslog, and that is readable on any distribution without loading code into those processes.

Sources (option `source`):

* `file` (default): follows a syslog file like `tail -F`. Option `path` (default: the first
  existing of /var/log/auth.log, /var/log/secure). It starts at the end of the file unless
  `from_start` is true. Rotation (the path now names another inode: rename + new file) is
  handled by reading the old file to its end, then the new one from its start; truncation
  (the file got shorter than our offset: copytruncate) restarts at offset 0; a missing file
  is waited for.
* `journal`: runs `journalctl -f -o json` (option `journalctl`, default found on PATH) and
  reads MESSAGE, SYSLOG_IDENTIFIER, _PID and __REALTIME_TIMESTAMP; option `identifiers`
  restricts it to those syslog identifiers (default: sshd, sshd-session, sudo, su, login and
  the display managers; [] = everything). If journalctl dies it is restarted after the last
  cursor seen, so nothing is read twice.

`parse_line(line)` is the pure parser of one syslog line; it returns a partial `auth` event
(`{"kind": "auth", "auth": {...}, "ts": ...}`; `ts` only when the line's prefix carries a time)
or None. Both prefixes are understood: "Dec  3 08:00:00 host prog[pid]: msg" (no year: the
current year is assumed, the previous one when that would put the line more than two days in
the future; the time is taken as UTC) and RFC 3339 "2026-12-03T08:00:00.123456+00:00 host
prog[pid]: msg" (converted to UTC). `parse_message(program, message)` does the same for a
message without its prefix (the journal path) and returns the `auth` object.

Rules (kept simple on purpose; one line gives at most one event):

* sshd / sshd-session: "Accepted METHOD for USER from IP port N" -> login (method = METHOD);
  "Failed METHOD for [invalid user] USER from IP" -> failure (method); "Invalid user USER from
  IP" -> failure (no method); "Disconnected from user USER IP port N" -> logout (src_ip);
  "pam_unix(sshd:session): session closed for user USER" -> logout. Note that sshd logs both
  "Invalid user" and "Failed password for invalid user" for one attempt, and both
  "Disconnected" and "session closed" for one session, so those count twice. sshd's own PAM
  lines for "authentication failure" and "session opened" are ignored: "Failed ..." and
  "Accepted ..." already report them. rsyslog's "message repeated N times: [ ... ]" is
  unwrapped into one event.
* sudo: "USER : TTY=... ; PWD=... ; USER=root ; COMMAND=..." -> sudo (user = the invoking
  user, method "sudo"); the same line led by a reason ("3 incorrect password attempts",
  "user NOT in sudoers", "a password is required", "command not allowed") -> failure.
* PAM (pam_unix, any program): "pam_unix(SERVICE:auth): authentication failure; ... user=X"
  -> failure (user = `user=`, else `ruser=`/`logname=`; src_ip from `rhost=` when it is an
  address; method = SERVICE); "pam_unix(SERVICE:session): session opened for user X" ->
  login and "session closed for user X" -> logout, only for interactive-login services
  (login, su, su-l, gdm-*, lightdm, sddm, xrdp-sesman, cockpit, vsftpd, ...) so cron, sudo and
  systemd --user sessions are not reported as logins.
* su: "FAILED SU (to USER) BY on TTY" / "FAILED su for USER by BY" -> failure (method "su").
* login: "FAILED LOGIN (N) on 'TTY' FOR 'USER', reason" -> failure (method "login").

Source IPs that are not addresses (sshd with UseDNS logs host names) are left out, and
IPv4-mapped IPv6 addresses are written as IPv4.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any, ClassVar

import orjson

from agents.sensors.base import Event, Sensor, SensorUnavailable, utc_from_epoch
from sentinel.logs import get_logger

log = get_logger(__name__)

DEFAULT_PATHS = ("/var/log/auth.log", "/var/log/secure")
DEFAULT_IDENTIFIERS = (
    "sshd",
    "sshd-session",
    "sudo",
    "su",
    "login",
    "gdm-password",
    "lightdm",
    "sddm",
)
SSHD_PROGRAMS = frozenset({"sshd", "sshd-session", "sshd-auth"})
LOGIN_SERVICES = frozenset(
    {
        "login",
        "su",
        "su-l",
        "gdm-password",
        "gdm-autologin",
        "gdm-fingerprint",
        "gdm-smartcard",
        "lightdm",
        "lightdm-autologin",
        "sddm",
        "sddm-autologin",
        "xrdp-sesman",
        "cockpit",
        "vsftpd",
        "remote",
        "kde",
        "xdm",
    }
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}

_BSD = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?:\.(?P<frac>\d+))? (?P<host>\S+) (?P<rest>.*)$"
)
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d)[T ](?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d\d:?\d\d)? (?P<host>\S+) (?P<rest>.*)$"
)
_PROG = re.compile(r"^(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$")
_REPEATED = re.compile(r"^message repeated \d+ times: \[ ?(?P<msg>.*?) ?\]$")

_SSH_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>\S+) port \d+")
_SSH_FAILED = re.compile(
    r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+)(?: port \d+)?"
)
_SSH_INVALID = re.compile(r"^Invalid user (?P<user>\S+) from (?P<ip>\S+)")
_SSH_DISCONNECTED = re.compile(r"^Disconnected from user (?P<user>\S+) (?P<ip>\S+) port \d+")
_PAM = re.compile(r"^pam_unix\((?P<svc>[^:()]+):(?P<type>\w+)\): (?P<text>.*)$")
_PAM_SESSION = re.compile(r"^session (?P<what>opened|closed) for user (?P<user>[^\s(]+)")
_KV = re.compile(r"(\w+)=(\S*)")
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?P<rest>.*\bCOMMAND=.*)$")
_SUDO_FAILURES = ("incorrect password", "not in sudoers", "password is required", "not allowed")
_SU_FAILED = re.compile(r"^FAILED SU \(to (?P<user>[^)\s]+)\)|^FAILED su for (?P<user2>\S+) by")
_LOGIN_FAILED = re.compile(r"^FAILED LOGIN \(\d+\) on '[^']*' FOR '(?P<user>[^']+)'")


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _auth(
    action: str, user: str | None, ip: str | None = None, method: str | None = None
) -> dict[str, Any] | None:
    user = (user or "").strip("'\"")
    if not user:
        return None
    obj: dict[str, Any] = {"action": action, "user": user}
    addr = _ip(ip)
    if addr:
        obj["src_ip"] = addr
    if method:
        obj["method"] = method
    return obj


def _pam(match: re.Match[str], program: str) -> dict[str, Any] | None:
    svc, kind, text = match["svc"], match["type"], match["text"]
    if kind == "auth" and text.startswith("authentication failure"):
        if svc in SSHD_PROGRAMS or program in SSHD_PROGRAMS:
            return None  # sshd's own "Failed password ..." line reports it
        kv = dict(_KV.findall(text))
        user = kv.get("user") or kv.get("ruser") or kv.get("logname")
        return _auth("failure", user, kv.get("rhost"), svc)
    if kind == "session":
        session = _PAM_SESSION.match(text)
        if session is None:
            return None
        user = session["user"]
        if session["what"] == "opened":
            return _auth("login", user, None, svc) if svc in LOGIN_SERVICES else None
        if svc in LOGIN_SERVICES:
            return _auth("logout", user, None, svc)
        if svc in SSHD_PROGRAMS:
            return _auth("logout", user)
    return None


def _sudo(message: str) -> dict[str, Any] | None:
    match = _SUDO.match(message)
    if match is None:
        return None
    user = match["user"]
    head = match["rest"].split("COMMAND=", 1)[0]
    fields = [f.strip() for f in head.split(" ; ")]
    reason = fields[0] if fields and "=" not in fields[0] else ""
    if reason:
        lowered = reason.lower()
        if any(word in lowered for word in _SUDO_FAILURES):
            return _auth("failure", user, None, "sudo")
        return None
    return _auth("sudo", user, None, "sudo")


def parse_message(program: str, message: str) -> dict[str, Any] | None:
    """The `auth` object for one syslog message (prefix already removed), or None."""
    program = os.path.basename(program or "").lower()
    message = message.strip()
    repeated = _REPEATED.match(message)
    if repeated:
        message = repeated["msg"]
    pam = _PAM.match(message)
    if pam:
        return _pam(pam, program)
    if program in SSHD_PROGRAMS:
        if m := _SSH_ACCEPTED.match(message):
            return _auth("login", m["user"], m["ip"], m["method"])
        if m := _SSH_FAILED.match(message):
            return _auth("failure", m["user"], m["ip"], m["method"])
        if m := _SSH_INVALID.match(message):
            return _auth("failure", m["user"], m["ip"])
        if m := _SSH_DISCONNECTED.match(message):
            return _auth("logout", m["user"], m["ip"])
        return None
    if program == "sudo":
        return _sudo(message)
    if program in ("su", "su-l"):
        if m := _SU_FAILED.match(message):
            return _auth("failure", m["user"] or m["user2"], None, "su")
        return None
    if program == "login" and (m := _LOGIN_FAILED.match(message)):
        return _auth("failure", m["user"], None, "login")
    return None


def _frac(text: str | None) -> int:
    return int((text or "0")[:6].ljust(6, "0"))


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_prefix(line: str, now: datetime | None = None) -> tuple[str | None, str, str] | None:
    """(ts or None, program, message) of a syslog line, or None when it has no known prefix."""
    line = line.rstrip("\r\n")
    ts: str | None = None
    rest: str
    if m := _ISO.match(line):
        tz = m["tz"] or "+00:00"
        if tz == "Z":
            tz = "+00:00"
        elif ":" not in tz:
            tz = f"{tz[:3]}:{tz[3:]}"
        try:
            dt = datetime.fromisoformat(f"{m['date']}T{m['time']}{tz}").replace(
                microsecond=_frac(m["frac"])
            )
            ts = _fmt(dt)
        except ValueError:
            ts = None
        rest = m["rest"]
    elif m := _BSD.match(line):
        now = now or datetime.now(UTC)
        try:
            dt = datetime(
                now.year,
                _MONTHS[m["mon"]],
                int(m["day"]),
                int(m["h"]),
                int(m["m"]),
                int(m["s"]),
                _frac(m["frac"]),
                tzinfo=UTC,
            )
            if dt > now + timedelta(days=2):  # December's lines read in January
                dt = dt.replace(year=now.year - 1)
            ts = _fmt(dt)
        except (KeyError, ValueError):
            ts = None
        rest = m["rest"]
    else:
        return None
    prog = _PROG.match(rest)
    if prog is None:
        return None
    return ts, prog["prog"], prog["msg"]


def parse_line(line: str, now: datetime | None = None) -> dict[str, Any] | None:
    """A partial `auth` event for one syslog line (`ts` from its prefix when present), or None."""
    parsed = parse_prefix(line, now)
    if parsed is None:
        return None
    ts, program, message = parsed
    obj = parse_message(program, message)
    if obj is None:
        return None
    event: dict[str, Any] = {"kind": "auth", "auth": obj}
    if ts:
        event["ts"] = ts
    return event


def parse_journal_entry(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A partial `auth` event for one `journalctl -o json` entry, or None."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journalctl writes non-UTF-8 messages as byte arrays
        try:
            message = bytes(message).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if not isinstance(message, str):
        return None
    program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or ""
    obj = parse_message(str(program), message)
    if obj is None:
        return None
    event: dict[str, Any] = {"kind": "auth", "auth": obj}
    stamp = entry.get("__REALTIME_TIMESTAMP")
    with contextlib.suppress(TypeError, ValueError):
        if stamp is not None:
            event["ts"] = utc_from_epoch(int(stamp) / 1_000_000)
    return event


# ---------------------------------------------------------------------------------------------
# Following a file
# ---------------------------------------------------------------------------------------------


class FileFollower:
    """The complete lines appended to `path`, across rotation and truncation (like `tail -F`)."""

    def __init__(self, path: str, from_start: bool, poll_s: float, sensor: Sensor) -> None:
        self.path = path
        self.from_start = from_start
        self.poll_s = poll_s
        self.sensor = sensor
        self._fh: IO[bytes] | None = None
        self._ident: tuple[int, int] | None = None
        self._partial = b""
        self._first_try = True

    def open(self) -> bool:
        """Open the file if it exists: at its end on the first try (unless from_start), at its
        start afterwards (a file that appears later, or the new file after a rotation)."""
        first, self._first_try = self._first_try, False
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - held across iterations
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if first and not self.from_start:
            fh.seek(0, os.SEEK_END)
        self._fh, self._ident, self._partial = fh, (st.st_dev, st.st_ino), b""
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _split(self, chunk: bytes) -> Iterator[str]:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            yield raw.decode("utf-8", "replace").rstrip("\r")

    def lines(self) -> Iterator[str]:
        stopping = self.sensor.stopping
        waited_logged = False
        try:
            while not stopping.is_set():
                if self._fh is None and not self.open():
                    if not waited_logged:
                        log.info("auth.waiting_for_file", path=self.path)
                        waited_logged = True
                    stopping.wait(self.poll_s)
                    continue
                fh = self._fh
                assert fh is not None
                chunk = fh.read(1 << 16)
                if chunk:
                    yield from self._split(chunk)
                    continue
                # At the end: has the path moved on to another file, or been truncated?
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    stopping.wait(self.poll_s)  # renamed away; the new file is not there yet
                    continue
                if (st.st_dev, st.st_ino) != self._ident:
                    if self._partial:  # the old file's last line had no newline
                        yield self._partial.decode("utf-8", "replace")
                    self.sensor.count("rotations")
                    log.info("auth.rotated", path=self.path)
                    self.close()
                    self.open()
                    continue
                if st.st_size < fh.tell():
                    self.sensor.count("truncations")
                    log.info("auth.truncated", path=self.path)
                    fh.seek(0)
                    self._partial = b""
                    continue
                stopping.wait(self.poll_s)
        finally:
            self.close()


# ---------------------------------------------------------------------------------------------
# The sensor
# ---------------------------------------------------------------------------------------------


class AuthSensor(Sensor):
    """Logins, failed logins, sudo and logouts, from the auth log file or the journal."""

    name: ClassVar[str] = "auth"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("auth",)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.source = str(self.option("source", "file"))
        self.from_start = bool(self.option("from_start", False))
        self.poll_s = float(self.option("poll_s", 0.25))
        self._proc: subprocess.Popen[bytes] | None = None
        self._follower: FileFollower | None = None
        self._iterating = False

    # -- configuration ----------------------------------------------------------------------
    def path(self) -> str | None:
        configured = self.option("path", None)
        if configured:
            return str(configured)
        return next((p for p in DEFAULT_PATHS if os.path.exists(p)), None)

    def journalctl(self) -> str | None:
        configured = self.option("journalctl", None)
        if configured:
            return str(configured) if os.access(str(configured), os.X_OK) else None
        return shutil.which("journalctl")

    def check(self) -> list[str]:
        if self.source == "file":
            path = self.path()
            if path is None:
                return [
                    f"no auth log: none of {', '.join(DEFAULT_PATHS)} exists "
                    "(set option path, or source: journal)"
                ]
            if os.path.exists(path):
                if not os.access(path, os.R_OK):
                    return [f"cannot read {path} (needs root or the adm group)"]
            elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                return [f"the directory of {path} does not exist"]
            return []
        if self.source == "journal":
            if self.journalctl() is None:
                return ["journalctl not found (source: journal needs systemd's journalctl)"]
            return []
        return [f"option source must be 'file' or 'journal', got '{self.source}'"]

    def start(self) -> None:
        super().start()
        if self.source == "file":
            # Open now, so that what is appended after start() returns is read.
            path = self.path()
            assert path is not None  # check() passed
            self._follower = FileFollower(path, self.from_start, self.poll_s, self)
            self._follower.open()
            log.info("auth.following", path=path, from_start=self.from_start)

    def stop(self) -> None:
        super().stop()
        if self._follower is not None and not self._iterating:
            self._follower.close()  # started but never iterated

    # -- events -----------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        self._iterating = True
        try:
            if self.source == "journal":
                yield from self._journal_events()
            else:
                yield from self._file_events()
        finally:
            self._iterating = False

    def _file_events(self) -> Iterator[Event]:
        if self._follower is None:
            self.start()
        follower = self._follower
        assert follower is not None
        for line in follower.lines():
            self.count("lines")
            event = self._safe_parse(line)
            if event is not None:
                yield event

    def _safe_parse(self, line: str) -> Event | None:
        try:
            return parse_line(line)
        except Exception as exc:  # a parser bug must not end the sensor
            self.count("parse_errors")
            log.warning("auth.parse_failed", error=repr(exc), line=line[:200])
            return None

    def _journal_command(self, cursor: str | None) -> list[str]:
        binary = self.journalctl()
        if binary is None:
            raise SensorUnavailable("auth: " + "; ".join(self.check()))
        cmd = [binary, "-f", "-o", "json", "--no-pager"]
        if cursor:
            cmd.append(f"--after-cursor={cursor}")
        else:
            cmd += ["-n", "all" if self.from_start else "0"]
        identifiers = self.option("identifiers", list(DEFAULT_IDENTIFIERS))
        cmd += [f"SYSLOG_IDENTIFIER={ident}" for ident in identifiers]
        return cmd

    def _journal_events(self) -> Iterator[Event]:
        cursor: str | None = None
        backoff = 0.5
        while not self.stopping.is_set():
            cmd = self._journal_command(cursor)
            log.info("auth.journal_started", command=" ".join(cmd))
            # stderr goes to a file: a pipe nobody reads could fill up and stall journalctl
            errfile = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _end
            try:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                errfile.close()
                raise SensorUnavailable(f"auth: cannot run journalctl: {exc}") from exc
            self._proc = proc
            got_any = False
            try:
                for entry in self._journal_entries(proc):
                    got_any = True
                    cursor = entry.get("__CURSOR") or cursor
                    try:
                        event = parse_journal_entry(entry)
                    except Exception as exc:
                        self.count("parse_errors")
                        log.warning("auth.parse_failed", error=repr(exc))
                        continue
                    if event is not None:
                        yield event
            finally:
                err = self._end(proc, errfile)
            if self.stopping.is_set():
                break
            self.count("journal_restarts")
            log.warning("auth.journal_exited", rc=proc.returncode, stderr=err[-500:])
            backoff = 0.5 if got_any else min(backoff * 2, 5.0)
            self.stopping.wait(backoff)

    def _journal_entries(self, proc: subprocess.Popen[bytes]) -> Iterator[dict[str, Any]]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if not sel.select(self.poll_s):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    if not raw.strip():
                        continue
                    self.count("lines")
                    try:
                        entry = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        self.count("malformed")
                        continue
                    if isinstance(entry, dict):
                        yield entry

    def _end(self, proc: subprocess.Popen[bytes], errfile: IO[bytes]) -> str:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        err = b""
        with contextlib.suppress(OSError, ValueError):
            errfile.seek(0)
            err = errfile.read()
        errfile.close()
        self._proc = None
        return err.decode("utf-8", "replace")


__all__ = ["AuthSensor", "FileFollower", "parse_journal_entry", "parse_line", "parse_message"]
