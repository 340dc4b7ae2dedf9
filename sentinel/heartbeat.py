"""Heartbeats: a worker or agent says, every `heartbeat_interval_s`, which pack versions it runs.

They go to the compacted `sentinel.heartbeats.v1` (key: instance), so the latest report per
instance is always there; the policy service follows the topic to show deployments as they land.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sentinel.settings import Settings


def heartbeat(
    settings: Settings, *, instance: str, kind: str, packs: Mapping[str, str]
) -> dict[str, Any]:
    """A heartbeat (contract `sentinel.heartbeat/1`)."""
    groups = sorted(settings.rules_group_set)
    return {
        "schema": "sentinel.heartbeat/1",
        "instance": instance,
        "kind": kind,
        "group": groups[0] if groups else "",
        "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "packs": dict(packs),
        "host": socket.gethostname(),
    }


def worker_instance(settings: Settings) -> str:
    return f"worker:{socket.gethostname()}:{settings.streams_web_port}"


def agent_instance(host_id: str) -> str:
    return f"agent:{host_id}"
