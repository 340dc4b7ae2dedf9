r"""ETW sensor: process, network and DNS events on Windows, from Event Tracing for Windows.

Why ETW: it is the kernel's own instrumentation on Windows, with no driver to install, and
three manifest providers cover what the contract needs:

* Microsoft-Windows-Kernel-Process {22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}: ProcessStart (id 1)
  -> `proc` exec, ProcessStop (id 2) -> `proc` exit.
* Microsoft-Windows-Kernel-Network {7DD42A49-5329-4832-8DFD-43D979153A88}: TCP connect (12
  IPv4, 28 IPv6) -> `net` connect, TCP accept (15, 31) -> `net` accept, UDP send (42, 58) /
  receive (43, 59) -> `net` flow with bytes_out / bytes_in (those two only with option `udp`:
  one event per datagram is a lot).
* Microsoft-Windows-DNS-Client {1C95126E-7EEA-49A9-A3FE-A378B03DDB4D}: 3008 (query completed,
  with QueryStatus and QueryResults) -> `dns` with rcode and answers; 3006 (query started) ->
  a query-only `dns` event, only with option `dns_queries` (3008 repeats its query).

The live consumer uses pywintrace (`import etw`, imported in start() and only on Windows).
pywintrace hands its callback a tuple `(event_id, record)` where `record` holds "EventHeader"
({"ProcessId", "TimeStamp", "ProviderId", "EventDescriptor": {"Id", ...}, ...}), "Task Name",
"Description" and the provider's properties as TdhFormatProperty formatted them: numbers as
ints, addresses as "10.0.0.5" / "2001:db8::1" strings, ports as decimal strings. `normalize`
maps one such record (or a plain dict with an "EventHeader") to a partial contract event.

Assumptions, stated because ETW recordings differ:

* Timestamps: EventHeader.TimeStamp is a FILETIME (100 ns ticks since 1601-01-01 UTC), the
  default for real-time sessions; ISO 8601 strings are accepted too.
* Addresses: strings are parsed as they are; an integer IPv4 address is the raw `in_addr` read
  as a little-endian UINT32 (what a raw x86/x64 recording holds: 10.0.0.1 -> 0x0100000A), an
  integer above 2**32 is an IPv6 address's big-endian value. IPv4-mapped IPv6 becomes IPv4.
* Ports: TDH formats win:Port fields in host order, so ports (int or string) are taken as they
  are; a recording of raw network-order ports sets option `port_byte_order: network`.
* Kernel-Network reports endpoints from this host's view: saddr/sport local, daddr/dport
  remote, for every event id. So connect: src = saddr, dst = daddr; accept and UDP receive:
  src = daddr (the remote peer), dst = saddr (here).
* ProcessStart's ImageName is an NT path ("\Device\HarddiskVolume3\Windows\System32\cmd.exe");
  the live sensor maps device names to drive letters with QueryDosDeviceW. A replay uses option
  `device_map` ({"\\Device\\HarddiskVolume3": "C:"}) and otherwise maps any
  \Device\HarddiskVolumeN to C: (the system volume: right for most single-disk hosts).
  ProcessStop's ImageName is the file name only; the sensor fills the full path from the start
  event it saw. Kernel-Process does not carry the command line on every Windows build; the
  `cmdline` field is set when a CommandLine property is present.
* QueryType numbers map to the contract's qtype names (1 A, 2 NS, 5 CNAME, 6 SOA, 10 NULL,
  12 PTR, 15 MX, 16 TXT, 28 AAAA, 33 SRV, 64 SVCB, 65 HTTPS, 255 ANY); other types are
  ignored. QueryStatus (a Win32 error code) maps to rcode: 0, 9501 (DNS_INFO_NO_RECORDS) and
  9701 (DNS_ERROR_RECORD_DOES_NOT_EXIST) -> NOERROR, 9001 FORMERR, 9002 SERVFAIL, 9003 and
  11001 (WSAHOST_NOT_FOUND) NXDOMAIN, 9004 NOTIMP, 9005 REFUSED; other codes (timeouts, no
  server) leave rcode out. QueryResults ("type:  5 edge.example.net;::ffff:203.0.113.10;") gives
  one answer per entry: names for typed entries, addresses otherwise.

`replay_fixtures(path)` feeds a JSON file (a list of records, each `[event_id, record]` or a
record) through the same mapping, including the per-process enrichment the live sensor does
(parent_exe, the full exe of exits and of net/dns events). With option `fixtures` the sensor
replays that file on any OS instead of opening a session, which is how the mapping is tested
on Linux (tests/agents/sensors/test_dns_auth_etw.py, agents/sensors/fixtures/etw/sample.json).

Running the live consumer on Windows (elevated: real-time ETW sessions need Administrator):

    pip install pywintrace
    # agent.yaml
    sensors:
      etw:
        udp: false            # UDP datagrams as flows (noisy)
        dns_queries: false    # also report DNS-Client 3006 (query started)
    sentinel agent run --config agent.yaml      # from an Administrator prompt

The session is named by option `session_name` (default "Sentinel-ETW"); a session of that name
left behind by a crashed agent is stopped first. Events the consumer thread cannot queue
(option `queue_size`, default 10000) are counted as `dropped`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import re
import struct
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from agents.sensors.base import Event, Sensor, SensorUnavailable
from agents.sensors.dns import QTYPES  # the DNS wire type numbers ETW reports too
from sentinel.logs import get_logger

log = get_logger(__name__)

KERNEL_PROCESS = "22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716"
KERNEL_NETWORK = "7DD42A49-5329-4832-8DFD-43D979153A88"
DNS_CLIENT = "1C95126E-7EEA-49A9-A3FE-A378B03DDB4D"

# provider GUID -> (name, the keywords to enable, the event ids we map)
PROVIDERS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    KERNEL_PROCESS: ("Microsoft-Windows-Kernel-Process", 0x10, (1, 2)),  # WINEVENT_KEYWORD_PROCESS
    KERNEL_NETWORK: (
        "Microsoft-Windows-Kernel-Network",
        0x30,  # KERNEL_NETWORK_KEYWORD_IPV4 | _IPV6
        (12, 15, 28, 31, 42, 43, 58, 59),
    ),
    DNS_CLIENT: ("Microsoft-Windows-DNS-Client", 0, (3006, 3008)),  # 0: every keyword
}

PROC_START, PROC_STOP = 1, 2
TCP_CONNECT = {12: 4, 28: 6}
TCP_ACCEPT = {15: 4, 31: 6}
UDP_SEND = {42: 4, 58: 6}
UDP_RECV = {43: 4, 59: 6}
DNS_QUERY, DNS_COMPLETED = 3006, 3008

QUERY_STATUS: dict[int, str] = {
    0: "NOERROR",
    9501: "NOERROR",  # DNS_INFO_NO_RECORDS: the name exists, no record of that type
    9701: "NOERROR",  # DNS_ERROR_RECORD_DOES_NOT_EXIST
    9001: "FORMERR",  # DNS_ERROR_RCODE_FORMAT_ERROR
    9002: "SERVFAIL",  # DNS_ERROR_RCODE_SERVER_FAILURE
    9003: "NXDOMAIN",  # DNS_ERROR_RCODE_NAME_ERROR
    11001: "NXDOMAIN",  # WSAHOST_NOT_FOUND
    9004: "NOTIMP",  # DNS_ERROR_RCODE_NOT_IMPLEMENTED
    9005: "REFUSED",  # DNS_ERROR_RCODE_REFUSED
}

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_HARDDISK_VOLUME = re.compile(r"^\\Device\\HarddiskVolume\d+(?=\\)", re.IGNORECASE)
_RESULT_TYPED = re.compile(r"^type:\s*(\d+)\s+(\S+)$")


# ---------------------------------------------------------------------------------------------
# Field conversions
# ---------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text.lower().startswith("0x") else int(text)
        except ValueError:
            return None
    return None


def filetime_to_rfc3339(value: Any) -> str | None:
    """A FILETIME (100 ns ticks since 1601, int or digits) or ISO string -> RFC 3339 UTC."""
    ticks = _int(value)
    if ticks is not None:
        if ticks <= 0:
            return None
        try:
            dt = _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    else:
        return None
    if not 1970 <= dt.year <= 9999:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etw_ip(value: Any) -> str | None:
    """An ETW address (dotted/colon string, or an integer: see the module docstring) or None."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            if 0 <= value < 2**32:
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                    struct.pack("<I", value)
                )
            else:
                addr = ipaddress.IPv6Address(value)
        elif isinstance(value, str):
            text = value.strip().strip("[]").split("%", 1)[0]
            addr = ipaddress.ip_address(text)
        else:
            return None
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def etw_port(value: Any, byte_order: str = "host") -> int | None:
    port = _int(value)
    if port is None or not 0 <= port <= 0xFFFF:
        return None
    if byte_order == "network":
        port = ((port & 0xFF) << 8) | (port >> 8)
    return port


def windows_path(path: str, device_map: Mapping[str, str] | None = None) -> str:
    r"""An NT path as a DOS path: \??\C:\x -> C:\x, \SystemRoot\x -> C:\Windows\x, devices mapped."""
    if path.startswith("\\??\\"):
        path = path[4:]
    if path.lower().startswith("\\systemroot\\"):
        return "C:\\Windows\\" + path[len("\\SystemRoot\\") :]
    if device_map:
        lowered = path.lower()
        for device in sorted(device_map, key=len, reverse=True):
            prefix = device.rstrip("\\")
            if lowered.startswith(prefix.lower() + "\\"):
                return device_map[device].rstrip("\\") + path[len(prefix) :]
    if _HARDDISK_VOLUME.match(path):
        return _HARDDISK_VOLUME.sub("C:", path, count=1)
    return path


def parse_query_results(text: Any) -> list[str]:
    """DNS-Client QueryResults ("type:  5 name;::ffff:1.2.3.4;...") -> answer strings."""
    if not isinstance(text, str):
        return []
    answers = []
    for entry in text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        typed = _RESULT_TYPED.match(entry)
        if typed:
            answers.append(typed.group(2).rstrip("."))
            continue
        addr = etw_ip(entry)
        if addr:
            answers.append(addr)
    return answers


# ---------------------------------------------------------------------------------------------
# The normaliser
# ---------------------------------------------------------------------------------------------


def _guid(value: Any) -> str:
    return str(value or "").strip().strip("{}").upper()


def _split(record: Any) -> tuple[int | None, dict[str, Any]] | None:
    if isinstance(record, (list, tuple)) and len(record) == 2 and isinstance(record[1], dict):
        return _int(record[0]), record[1]
    if isinstance(record, dict):
        return None, record
    return None


def _provider(header: Mapping[str, Any], props: Mapping[str, Any]) -> str:
    guid = _guid(header.get("ProviderId"))
    if guid:
        return guid
    # No provider id (a hand-made or trimmed recording): go by the task name and fields.
    task = str(props.get("Task Name") or "").upper()
    if task.startswith("PROCESS"):
        return KERNEL_PROCESS
    if task.startswith(("KERNEL_NETWORK", "TCPIP", "UDPIP")):
        return KERNEL_NETWORK
    if "QueryName" in props:
        return DNS_CLIENT
    return guid


def normalize(
    record: Any,
    *,
    device_map: Mapping[str, str] | None = None,
    port_byte_order: str = "host",
    dns_queries: bool = True,
    udp: bool = True,
) -> dict[str, Any] | None:
    """One ETW record -> a partial contract event (kind, its object, ts), or None to ignore.

    `record` is pywintrace's `(event_id, dict)` (a list after a JSON round trip) or the dict
    alone. Records of other providers or event ids, and records missing a required field,
    give None; so do DNS-Client 3006 without `dns_queries` and UDP events without `udp`.
    """
    split = _split(record)
    if split is None:
        return None
    event_id, props = split
    header = props.get("EventHeader")
    if not isinstance(header, Mapping):
        header = {}
    descriptor = header.get("EventDescriptor")
    if event_id is None and isinstance(descriptor, Mapping):
        event_id = _int(descriptor.get("Id"))
    if event_id is None:
        return None
    provider = _provider(header, props)
    try:
        if provider == KERNEL_PROCESS:
            kind, obj = _proc(event_id, header, props, device_map)
        elif provider == KERNEL_NETWORK:
            kind, obj = _net(event_id, header, props, port_byte_order, udp)
        elif provider == DNS_CLIENT:
            kind, obj = _dns(event_id, header, props, dns_queries)
        else:
            return None
    except _Skip:
        return None
    event: dict[str, Any] = {"kind": kind, kind: obj}
    ts = filetime_to_rfc3339(header.get("TimeStamp"))
    if ts:
        event["ts"] = ts
    return event


class _Skip(Exception):
    """This record does not make an event."""


def _pid(value: Any) -> int:
    pid = _int(value)
    if pid is None or not 0 <= pid <= 0xFFFFFFFF:
        raise _Skip
    return pid


def _proc(
    event_id: int,
    header: Mapping[str, Any],
    props: Mapping[str, Any],
    device_map: Mapping[str, str] | None,
) -> tuple[str, dict[str, Any]]:
    if event_id not in (PROC_START, PROC_STOP):
        raise _Skip
    image = props.get("ImageName")
    if not isinstance(image, str) or not image.strip():
        raise _Skip
    obj: dict[str, Any] = {
        "action": "exec" if event_id == PROC_START else "exit",
        "pid": _pid(props.get("ProcessID")),
        "exe": windows_path(image.strip(), device_map),
    }
    if event_id == PROC_START:
        # The header's ProcessId is the creating process; ParentProcessID says it explicitly.
        ppid = _int(props.get("ParentProcessID"))
        if ppid is None:
            ppid = _int(header.get("ProcessId"))
        if ppid is not None and 0 <= ppid <= 0xFFFFFFFF:
            obj["ppid"] = ppid
        cmdline = props.get("CommandLine")
        if isinstance(cmdline, str) and cmdline:
            obj["cmdline"] = cmdline
    return "proc", obj


def _net(
    event_id: int,
    header: Mapping[str, Any],
    props: Mapping[str, Any],
    byte_order: str,
    udp: bool,
) -> tuple[str, dict[str, Any]]:
    local_ip, remote_ip = etw_ip(props.get("saddr")), etw_ip(props.get("daddr"))
    local_port = etw_port(props.get("sport"), byte_order)
    remote_port = etw_port(props.get("dport"), byte_order)
    if event_id in TCP_CONNECT or event_id in UDP_SEND:
        src, dst = (local_ip, local_port), (remote_ip, remote_port)
    elif event_id in TCP_ACCEPT or event_id in UDP_RECV:
        src, dst = (remote_ip, remote_port), (local_ip, local_port)
    else:
        raise _Skip
    if dst[0] is None or dst[1] is None:
        raise _Skip
    is_udp = event_id in UDP_SEND or event_id in UDP_RECV
    if is_udp and not udp:
        raise _Skip
    obj: dict[str, Any] = {
        "action": "flow" if is_udp else ("connect" if event_id in TCP_CONNECT else "accept"),
        "proto": "udp" if is_udp else "tcp",
    }
    if src[0] is not None:
        obj["src_ip"] = src[0]
    if src[1] is not None:
        obj["src_port"] = src[1]
    obj["dst_ip"], obj["dst_port"] = dst
    pid = _int(props.get("PID"))
    if pid is None:
        pid = _int(header.get("ProcessId"))
    if pid is not None and 0 <= pid <= 0xFFFFFFFF:
        obj["pid"] = pid
    if is_udp:
        size = _int(props.get("size"))
        if size is not None and size >= 0:
            obj["bytes_out" if event_id in UDP_SEND else "bytes_in"] = size
        obj["packets"] = 1
    return "net", obj


def _dns(
    event_id: int, header: Mapping[str, Any], props: Mapping[str, Any], dns_queries: bool
) -> tuple[str, dict[str, Any]]:
    if event_id not in (DNS_QUERY, DNS_COMPLETED) or (event_id == DNS_QUERY and not dns_queries):
        raise _Skip
    name = props.get("QueryName")
    if not isinstance(name, str) or not name.strip():
        raise _Skip
    qtype = QTYPES.get(_int(props.get("QueryType")) or -1)
    if qtype is None:
        raise _Skip
    obj: dict[str, Any] = {"query": name.strip().rstrip(".") or ".", "qtype": qtype}
    if event_id == DNS_COMPLETED:
        status = _int(props.get("QueryStatus"))
        rcode = QUERY_STATUS.get(status) if status is not None else None
        if rcode:
            obj["rcode"] = rcode
        obj["answers"] = parse_query_results(props.get("QueryResults"))
    pid = _int(header.get("ProcessId"))
    if pid is not None and 0 <= pid <= 0xFFFFFFFF:
        obj["pid"] = pid
    return "dns", obj


# ---------------------------------------------------------------------------------------------
# Enrichment across records, and replay
# ---------------------------------------------------------------------------------------------


class EtwMapper:
    """`normalize` plus what one record cannot know: the image of each process seen starting.

    Fills `parent_exe` of exec events, the full path of exit events (ProcessStop carries the
    file name only) and `exe` of net/dns events, from the ProcessStart events seen so far.
    """

    def __init__(self, max_processes: int = 16384, **options: Any) -> None:
        self.options = options
        self.max_processes = max_processes
        self._exe: OrderedDict[int, str] = OrderedDict()

    def map(self, record: Any) -> dict[str, Any] | None:
        event = normalize(record, **self.options)
        if event is None:
            return None
        kind = event["kind"]
        obj = event[kind]
        pid = obj.get("pid")
        if kind == "proc" and obj["action"] == "exec":
            parent = self._exe.get(obj.get("ppid", -1))
            if parent:
                obj["parent_exe"] = parent
            self._exe[pid] = obj["exe"]
            self._exe.move_to_end(pid)
            while len(self._exe) > self.max_processes:
                self._exe.popitem(last=False)
        elif kind == "proc":
            known = self._exe.pop(pid, None)
            if known and "\\" not in obj["exe"] and _basename(known) == obj["exe"].lower():
                obj["exe"] = known
        elif pid is not None and "exe" not in obj and pid in self._exe:
            obj["exe"] = self._exe[pid]
        return event


def _basename(path: str) -> str:
    return path.replace("/", "\\").rsplit("\\", 1)[-1].lower()


def load_fixtures(path: str | os.PathLike[str]) -> list[Any]:
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(records, dict) and isinstance(records.get("records"), list):
        records = records["records"]
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of ETW records")
    return records


def replay_fixtures(path: str | os.PathLike[str], **options: Any) -> Iterator[dict[str, Any]]:
    """The partial events of a recorded fixture file (a JSON list of ETW-shaped records)."""
    mapper = EtwMapper(**options)
    for record in load_fixtures(path):
        event = mapper.map(record)
        if event is not None:
            yield event


# ---------------------------------------------------------------------------------------------
# Windows helpers
# ---------------------------------------------------------------------------------------------


def dos_device_map() -> dict[str, str]:
    r"""{"\Device\HarddiskVolume3": "C:", ...} from QueryDosDeviceW (Windows only; else {})."""
    if sys.platform != "win32":
        return {}
    import ctypes
    import string

    found: dict[str, str] = {}
    buf = ctypes.create_unicode_buffer(1024)
    kernel32 = ctypes.windll.kernel32
    for letter in string.ascii_uppercase:
        drive = f"{letter}:"
        if kernel32.QueryDosDeviceW(drive, buf, len(buf)):
            found[buf.value] = drive
    return found


def _is_admin() -> bool:
    try:
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# The sensor
# ---------------------------------------------------------------------------------------------


class EtwSensor(Sensor):
    """Windows process, network and DNS events from ETW (or a recorded fixture file)."""

    name: ClassVar[str] = "etw"
    version: ClassVar[str] = "0.1.0"
    kinds: ClassVar[tuple[str, ...]] = ("proc", "net", "dns")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.fixtures: str | None = self.option("fixtures", None) or None
        self.poll_s = float(self.option("poll_s", 0.25))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=int(self.option("queue_size", 10000)))
        self._job: Any = None
        self._device_map: dict[str, str] = {}

    def _mapper(self) -> EtwMapper:
        device_map = dict(self._device_map)
        device_map.update(self.option("device_map", {}) or {})
        return EtwMapper(
            device_map=device_map or None,
            port_byte_order=str(self.option("port_byte_order", "host")),
            dns_queries=bool(self.option("dns_queries", False)),
            udp=bool(self.option("udp", False)),
        )

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        if self.fixtures:
            if not os.path.isfile(self.fixtures):
                return [f"fixture file {self.fixtures} does not exist"]
            return []
        if sys.platform != "win32":
            return [
                f"ETW needs Windows and the pywintrace package (pip install pywintrace); "
                f"this host is {sys.platform} (set option fixtures to replay recorded events)"
            ]
        import importlib.util

        missing = []
        if importlib.util.find_spec("etw") is None:
            missing.append("the pywintrace package is not installed (pip install pywintrace)")
        if not _is_admin():
            missing.append("ETW real-time sessions need Administrator (run the agent elevated)")
        return missing

    def start(self) -> None:
        super().start()
        if self.fixtures:
            log.info("etw.replaying", path=self.fixtures)
            return
        try:
            import etw  # pywintrace
        except ImportError as exc:
            raise SensorUnavailable(
                f"etw: pywintrace is not importable ({exc}); pip install pywintrace"
            ) from exc
        self._device_map = dos_device_map()
        session = str(self.option("session_name", "Sentinel-ETW"))
        with contextlib.suppress(Exception):  # a session left by a crashed agent
            etw.ETW(session_name=session).control_stop(etw.TraceProperties())
        providers = [
            etw.ProviderInfo(name, etw.GUID("{" + guid + "}"), any_keywords=keywords)
            for guid, (name, keywords, _ids) in PROVIDERS.items()
        ]
        filters = {"{" + guid + "}": list(ids) for guid, (_n, _k, ids) in PROVIDERS.items()}
        try:
            self._job = etw.ETW(
                session_name=session,
                providers=providers,
                event_callback=self._on_record,
                providers_event_id_filters=filters,
            )
            self._job.start()
        except Exception as exc:  # WindowsError with the Win32 reason
            self._job = None
            raise SensorUnavailable(
                f"etw: cannot start the ETW session '{session}': {exc}"
            ) from exc
        log.info("etw.started", session=session, providers=[p[0] for p in PROVIDERS.values()])

    def _on_record(self, record: Any) -> None:
        """pywintrace's callback (its consumer thread): hand the record to events()."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.count("dropped")

    def stop(self) -> None:
        super().stop()
        self._stop_session()

    def _stop_session(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            try:
                job.stop()
            except Exception as exc:
                log.warning("etw.stop_failed", error=repr(exc))

    # -- events -----------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        mapper = self._mapper()
        if self.fixtures:
            yield from self._replay(mapper)
            return
        if self._job is None:
            self.start()
        try:
            while not self.stopping.is_set():
                try:
                    record = self._queue.get(timeout=self.poll_s)
                except queue.Empty:
                    continue
                event = self._map(mapper, record)
                if event is not None:
                    yield event
        finally:
            self._stop_session()

    def _replay(self, mapper: EtwMapper) -> Iterator[Event]:
        assert self.fixtures is not None
        delay = float(self.option("replay_delay_s", 0.0))
        for record in load_fixtures(self.fixtures):
            if self.stopping.is_set():
                return
            event = self._map(mapper, record)
            if event is not None:
                yield event
            if delay:
                self.stopping.wait(delay)

    def _map(self, mapper: EtwMapper, record: Any) -> Event | None:
        self.count("records")
        try:
            event = mapper.map(record)
        except Exception as exc:  # a record shape we did not foresee must not end the sensor
            self.count("errors")
            log.warning("etw.normalize_failed", error=repr(exc))
            return None
        if event is None:
            self.count("ignored")
        return event


__all__ = [
    "PROVIDERS",
    "EtwMapper",
    "EtwSensor",
    "etw_ip",
    "etw_port",
    "filetime_to_rfc3339",
    "load_fixtures",
    "normalize",
    "parse_query_results",
    "replay_fixtures",
    "windows_path",
]
