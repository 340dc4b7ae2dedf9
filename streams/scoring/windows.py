"""Live per-host 5-minute window counters, defined exactly as dbt's `host_activity_5m`.

The worker counts what it validates and pushes the counts of each window it touched to Feast's
push source, so the online `host_activity` view holds the window in progress. The definitions
match the gold model column for column (tests/orchestration/test_models.py compares them):
exec spawns and their distinct parents, file creates and modifies, bytes out, auth failures.
Unlike silver, counters do not deduplicate by event id: a redelivered batch counts twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOW_S = 300
KEEP_WINDOWS = 3  # per host: the window in progress and two late ones
MAX_EVENT_IDS = 50
ACTIVITY = (
    "events",
    "process_spawns",
    "distinct_parents",
    "file_writes",
    "bytes_out",
    "auth_failures",
)


@dataclass
class Window:
    host: dict[str, Any]
    start: int  # epoch seconds, a multiple of WINDOW_S
    events: int = 0
    process_spawns: int = 0
    file_writes: int = 0
    bytes_out: int = 0
    auth_failures: int = 0
    parents: set[str] = field(default_factory=set)
    event_ids: list[str] = field(default_factory=list)

    @property
    def host_id(self) -> str:
        return str(self.host["id"])

    @property
    def start_dt(self) -> datetime:
        return datetime.fromtimestamp(self.start, UTC)

    @property
    def end_dt(self) -> datetime:
        return datetime.fromtimestamp(self.start + WINDOW_S, UTC)

    def counts(self) -> dict[str, int]:
        return {
            "events": self.events,
            "process_spawns": self.process_spawns,
            "distinct_parents": len(self.parents),
            "file_writes": self.file_writes,
            "bytes_out": self.bytes_out,
            "auth_failures": self.auth_failures,
        }

    def row(self) -> dict[str, Any]:
        """The push source's row: entity, timestamp (the window's end) and the counts."""
        return {"host_id": self.host_id, "event_timestamp": self.end_dt, **self.counts()}


class LiveWindows:
    """Counters of the recent windows of every host this worker sees."""

    def __init__(self, keep: int = KEEP_WINDOWS) -> None:
        self.keep = keep
        self.hosts: dict[str, dict[int, Window]] = {}
        self.dirty: dict[tuple[str, int], Window] = {}

    def observe(self, events: Iterable[dict[str, Any]]) -> None:
        hosts, dirty = self.hosts, self.dirty
        for event in events:
            host = event["host"]
            host_id = host["id"]
            start = int(datetime.fromisoformat(event["ts"]).timestamp()) // WINDOW_S * WINDOW_S
            windows = hosts.get(host_id)
            if windows is None:
                windows = hosts[host_id] = {}
            window = windows.get(start)
            if window is None:
                if windows and start < min(windows) and len(windows) >= self.keep:
                    continue  # older than every window kept: the lake counts it, not the live view
                window = windows[start] = Window(host, start)
                if len(windows) > self.keep:
                    del windows[min(windows)]
            _count(window, event)
            dirty[(host_id, start)] = window

    def take_dirty(self) -> list[Window]:
        """The windows changed since the last call, newest per host last."""
        taken = sorted(self.dirty.values(), key=lambda w: (w.host_id, w.start))
        self.dirty = {}
        return taken


def _count(window: Window, event: dict[str, Any]) -> None:
    window.events += 1
    if len(window.event_ids) < MAX_EVENT_IDS:
        window.event_ids.append(event["id"])
    kind = event["kind"]
    body = event.get(kind)
    if not isinstance(body, dict):
        return
    action = body.get("action")
    if kind == "proc":
        if action == "exec":
            window.process_spawns += 1
            parent = body.get("parent_exe")
            if parent is not None:
                window.parents.add(parent)
    elif kind == "file":
        if action in ("create", "modify"):
            window.file_writes += 1
    elif kind == "net":
        sent = body.get("bytes_out")
        if isinstance(sent, int) and not isinstance(sent, bool):
            window.bytes_out += sent
    elif kind == "auth" and action == "failure":
        window.auth_failures += 1
