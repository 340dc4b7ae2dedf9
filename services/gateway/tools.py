"""The triage tools the gateway runs itself: `get_alert_context`, `lookup_enrichment`,
`host_timeline`. Definitions are JSON Schemas (GET /v1/tools); a request with
`"sentinel_tools": true` gets them, and the gateway answers the model's calls to them.

Data: the enrichment feeds of streams/enrichment and the lake's DuckDB file (silver tables).
A tool never raises to the model: a problem is a JSON `{"error": ...}` result it can read.
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from sentinel.settings import Settings

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_alert_context",
            "description": (
                "The stored alert with this id (rule, severity, title, host, MITRE techniques, "
                "event count, pack) and the host's inventory record."
            ),
            "parameters": {
                "type": "object",
                "properties": {"alert_id": {"type": "string", "description": "the alert's id"}},
                "required": ["alert_id"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_enrichment",
            "description": (
                "What the enrichment feeds know of an indicator: IP reputation (threat intel, "
                "ranges included), file SHA-256 reputation, or a host id's inventory record."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "indicator": {
                        "type": "string",
                        "description": "an IP address, a SHA-256, a host id or a domain",
                    },
                    "kind": {
                        "type": "string",
                        "enum": ["ip", "file_hash", "host", "domain"],
                        "description": "what the indicator is; guessed when left out",
                    },
                },
                "required": ["indicator"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "host_timeline",
            "description": (
                "The host's most recent events in the lake (newest first), one line each: "
                "time, kind and what happened (process, file, connection, DNS query, login)."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "host_id": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "before": {
                        "type": "string",
                        "description": "only events before this RFC 3339 time (e.g. the alert's)",
                    },
                },
                "required": ["host_id"],
                "additionalProperties": False,
            },
        },
    },
]
TOOL_NAMES = frozenset(t["function"]["name"] for t in TOOLS)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

# What each silver table contributes to a timeline line.
_TIMELINE = {
    "proc": "concat_ws(' ', action, exe, cmdline)",
    "file": "concat_ws(' ', action, path, new_path)",
    "net": "concat_ws(' ', action, proto, src_ip || ':' || src_port, '->', "
    "dst_ip || ':' || dst_port, exe)",
    "dns": "concat_ws(' ', query, qtype, rcode)",
    "auth": "concat_ws(' ', action, user_name, 'from', src_ip, method)",
}


class ToolError(Exception):
    pass


class ToolExecutor:
    """Runs the sentinel tools in a thread; the feeds load on first use."""

    def __init__(self, settings: Settings, timeline_limit: int = 50) -> None:
        self.settings = settings
        self.timeline_limit = timeline_limit
        self._enricher: Any = None
        self._lock = threading.Lock()

    @property
    def lake(self) -> Path:
        return self.settings.lake_root / "lake.duckdb"

    async def run(self, name: str, arguments: str) -> dict[str, Any]:
        """The tool's result, or `{"error": ...}` saying what was wrong."""
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return {"error": f"arguments of {name} are not JSON: {exc}"}
        if not isinstance(args, dict):
            return {"error": f"arguments of {name} must be a JSON object"}
        try:
            return await asyncio.to_thread(self.call, name, args)
        except ToolError as exc:
            return {"error": str(exc)}

    def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "get_alert_context":
            return self.get_alert_context(_required(args, "alert_id"))
        if name == "lookup_enrichment":
            return self.lookup_enrichment(_required(args, "indicator"), args.get("kind"))
        if name == "host_timeline":
            limit = args.get("limit", self.timeline_limit)
            if not isinstance(limit, int) or not 1 <= limit <= 1000:
                raise ToolError("limit must be an integer from 1 to 1000")
            return self.host_timeline(_required(args, "host_id"), limit, args.get("before"))
        raise ToolError(f"unknown tool '{name}'; the tools are {', '.join(sorted(TOOL_NAMES))}")

    # --- enrichment

    def _feeds(self) -> Any:
        with self._lock:
            if self._enricher is None:
                from streams.enrichment import Enricher, FeedError

                try:
                    self._enricher = Enricher.from_settings(self.settings)
                except FeedError as exc:
                    raise ToolError(f"enrichment feeds cannot be read: {exc}") from None
            return self._enricher

    def lookup_enrichment(self, indicator: str, kind: Any = None) -> dict[str, Any]:
        from streams.enrichment.adapters import parse_address

        feeds = self._feeds()
        if kind is None:
            try:
                parse_address(indicator)
                kind = "ip"
            except ValueError:
                if _SHA256.fullmatch(indicator):
                    kind = "file_hash"
                elif indicator in feeds.hosts:
                    kind = "host"
                else:
                    kind = "domain" if "." in indicator else "host"
        if kind == "domain":
            return {
                "indicator": indicator,
                "kind": "domain",
                "found": False,
                "note": "no domain reputation feed is configured (feeds: ip, file_hash, host)",
            }
        feed = {"ip": feeds.ip, "file_hash": feeds.file_hashes, "host": feeds.hosts}.get(kind)
        if feed is None:
            raise ToolError(f"kind must be ip, file_hash, host or domain, not {kind!r}")
        record = feed.lookup(indicator)
        return {
            "indicator": indicator,
            "kind": kind,
            "found": record is not None,
            "record": dict(record) if record is not None else None,
            "feed_snapshot": feed.snapshot,
        }

    # --- lake

    def _query(self, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        import duckdb

        if not self.lake.exists():
            raise ToolError(
                f"no lake at {self.lake}: land and build it first (`sentinel lake ...`, "
                "see docs/lake.md)"
            )
        try:
            con = duckdb.connect(str(self.lake), read_only=True)
        except duckdb.Error as exc:
            raise ToolError(f"cannot open the lake {self.lake}: {exc}") from None
        try:
            result = con.execute(sql, params)
            columns = [d[0] for d in result.description or []]
            return columns, result.fetchall()
        except duckdb.CatalogException as exc:
            raise ToolError(
                f"the lake {self.lake} lacks a table this tool reads (build silver first): {exc}"
            ) from None
        except duckdb.Error as exc:
            raise ToolError(f"lake query failed: {exc}") from None
        finally:
            con.close()

    def get_alert_context(self, alert_id: str) -> dict[str, Any]:
        columns, rows = self._query(
            "SELECT alert_id, ts, rule_id, rule_version, severity, title, host_id, event_count, "
            "mitre, dedup_key, pack, pack_version FROM silver.silver_alerts WHERE alert_id = ?",
            [alert_id],
        )
        if not rows:
            return {"alert_id": alert_id, "found": False, "note": "no such alert in the lake"}
        alert = {c: _plain(v) for c, v in zip(columns, rows[0], strict=True)}
        host = self._feeds().hosts.lookup(str(alert["host_id"]))
        return {
            "alert_id": alert_id,
            "found": True,
            "alert": alert,
            "host": dict(host) if host is not None else None,
        }

    def host_timeline(self, host_id: str, limit: int, before: Any = None) -> dict[str, Any]:
        if before is not None and not isinstance(before, str):
            raise ToolError("before must be an RFC 3339 time string")
        filters = "host_id = ?" + (" AND ts < CAST(? AS TIMESTAMPTZ)" if before else "")
        parts, params = [], []
        for kind, summary in _TIMELINE.items():
            parts.append(
                f"SELECT ts, '{kind}' AS kind, event_id, {summary} AS what "
                f"FROM silver.silver_{kind}_events WHERE {filters}"
            )
            params += [host_id, before] if before else [host_id]
        sql = " UNION ALL ".join(parts) + " ORDER BY ts DESC LIMIT ?"
        _, rows = self._query(sql, [*params, limit])
        return {
            "host_id": host_id,
            "events": [
                {"ts": _plain(ts), "kind": kind, "event_id": eid, "what": what}
                for ts, kind, eid, what in rows
            ],
        }


def _required(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ToolError(f"argument '{name}' is required (a non-empty string)")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
