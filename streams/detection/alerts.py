"""Alerts from rule matches: deterministic ids, dedup keys, and suppression into counted alerts.

An alert id hashes rule id, rule version, host, dedup key and the start of the suppression window.
Windows are tumbling buckets of `suppress_seconds` in event time, so the same events always give
the same ids, however often they are replayed, on whichever worker.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sentinel.rules import Pack, RuleSpec

MAX_EVENT_IDS = 50


def field_value(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_alert(
    emitted: dict[str, Any],
    event: dict[str, Any],
    pack: Pack,
    rule: RuleSpec,
    *,
    engine_version: str,
    enrichment_snapshot: str = "",
) -> dict[str, Any]:
    """An alert (contract `sentinel.alert/1`) for one match; `emitted` is what the rule emitted."""
    host = event["host"]
    dedup_key = emitted.get("dedup")
    if not dedup_key:
        dedup_key = "|".join(str(field_value(event, f)) for f in rule.dedup_fields())
    epoch = _epoch(event["ts"])
    window = rule.suppress_seconds
    window_start = (epoch // window) * window if window else epoch
    window_iso = _iso(window_start)
    alert_id = hashlib.sha256(
        "\x1f".join([rule.id, pack.version, host["id"], str(dedup_key), window_iso]).encode()
    ).hexdigest()[:32]
    severity = emitted.get("severity") or rule.severity
    provenance = {"pack": pack.name, "pack_version": pack.version, "engine_version": engine_version}
    if enrichment_snapshot:
        provenance["enrichment_snapshot"] = enrichment_snapshot
    return {
        "schema": "sentinel.alert/1",
        "id": alert_id,
        "ts": event["ts"],
        "rule": {"id": rule.id, "version": pack.version, "hash": rule.sha256},
        "severity": severity
        if severity in ("low", "medium", "high", "critical")
        else rule.severity,
        "title": str(emitted.get("title") or rule.title),
        "host": host,
        "event_ids": [event["id"]],
        "count": 1,
        "mitre": list(rule.mitre),
        "context": emitted.get("context") if isinstance(emitted.get("context"), dict) else {},
        "dedup_key": str(dedup_key),
        "window_start": window_iso,
        "provenance": provenance,
    }


class Suppressor:
    """Folds alerts with the same id into one with a count; `drain` gives what to (re)publish.

    A new id is published at once; later matches inside its window republish it (same id, higher
    count) at most once per drain. Memory is bounded: the least recently seen ids are forgotten.
    """

    def __init__(self, max_open: int = 100_000) -> None:
        self.max_open = max_open
        self.open: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.touched: dict[str, None] = {}
        self.suppressed = 0

    def add(self, alert: dict[str, Any]) -> None:
        current = self.open.get(alert["id"])
        if current is None:
            self.open[alert["id"]] = alert
            while len(self.open) > self.max_open:
                self.open.popitem(last=False)
        else:
            self.suppressed += 1
            current["count"] += 1
            if len(current["event_ids"]) < MAX_EVENT_IDS:
                current["event_ids"].append(alert["event_ids"][0])
            self.open.move_to_end(alert["id"])
        self.touched[alert["id"]] = None

    def drain(self) -> list[dict[str, Any]]:
        out = [dict(self.open[i]) for i in self.touched if i in self.open]
        self.touched.clear()
        return out
