"""`sentinel trace ...`: read the span files of the file exporter back, e.g. one alert's path from
the event's producer through detection and triage to the gateway."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from sentinel.settings import get_settings
from sentinel.tracing import read_spans

app = typer.Typer(help="Traces written by the file exporter (SENTINEL_OTEL_EXPORTER=file).")

# The attributes worth a glance in the tree; `--json` prints them all.
SHOWN = (
    "alert.id",
    "rule.id",
    "severity",
    "host.id",
    "event.id",
    "messaging.batch.message_count",
    "detection.events",
    "detection.alerts",
    "triage.status",
    "triage.attempts",
    "gateway.model",
    "gateway.upstream",
    "http.response.status_code",
    "dagster.job",
)
MAX_LINKS_SHOWN = 3

Span = dict[str, Any]


@app.command("show")
def show(
    alert_id: Annotated[str, typer.Argument(help="the alert id (as in sentinel.alerts.v1)")],
    traces_dir: Annotated[
        Path | None, typer.Option(help="span files (default: SENTINEL_TRACES_DIR)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the spans as JSON lines")] = False,
    whole: Annotated[
        bool, typer.Option("--all", help="every span of the trace, other alerts' too")
    ] = False,
) -> None:
    """The span tree of the trace(s) an alert belongs to, with services and durations.

    A replayed or shipped batch starts one trace for all its events, so the trace may hold other
    alerts too; only this alert's path (its ancestors and what followed it) is shown unless
    `--all`.
    """
    directory = traces_dir or get_settings().traces_root
    spans = list(read_spans(directory)) if directory.is_dir() else []
    traces = {
        s["trace_id"] for s in spans if (s.get("attributes") or {}).get("alert.id") == alert_id
    }
    if not traces:
        typer.echo(
            f"no span with alert.id={alert_id} in {directory} ({len(spans)} spans read): is the "
            "id right, is SENTINEL_OTEL_EXPORTER=file, and have the processes flushed their spans "
            "(every SENTINEL_OTEL_FLUSH_INTERVAL_S)?",
            err=True,
        )
        raise typer.Exit(1)
    by_id = {s["span_id"]: s for s in spans}
    first = {t: min(s["start_unix_nano"] for s in spans if s["trace_id"] == t) for t in traces}
    for trace_id in sorted(traces, key=first.__getitem__):
        members = sorted(
            (s for s in spans if s["trace_id"] == trace_id), key=lambda s: s["start_unix_nano"]
        )
        if not whole:
            members = path_of(alert_id, members)
        if as_json:
            for span in members:
                sys.stdout.write(orjson.dumps(span).decode() + "\n")
            continue
        for line in render_tree(trace_id, members, by_id):
            typer.echo(line)


def path_of(alert_id: str, members: list[Span]) -> list[Span]:
    """The spans of `members` that carry the alert, their ancestors and their descendants."""
    by_id = {s["span_id"]: s for s in members}
    marked = {
        s["span_id"] for s in members if (s.get("attributes") or {}).get("alert.id") == alert_id
    }
    keep: set[str] = set()
    for span in members:
        chain: list[str] = []
        current: Span | None = span
        while current is not None and len(chain) <= len(members):
            chain.append(current["span_id"])
            current = by_id.get(current.get("parent_span_id") or "")
        if marked.intersection(chain):  # the alert's span, below it, or on its way up
            keep.update(chain)
    return [s for s in members if s["span_id"] in keep]


def render_tree(trace_id: str, members: list[Span], every: dict[str, Span]) -> list[str]:
    """One trace as indented lines: name, service, duration, offset from the trace's start."""
    ids = {s["span_id"] for s in members}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in members:
        parent = span.get("parent_span_id")
        children[parent if parent in ids else None].append(span)
    origin = members[0]["start_unix_nano"] if members else 0
    services = sorted({str(s.get("service")) for s in members})
    lines = [f"trace {trace_id}: {len(members)} spans, services {', '.join(services)}"]

    def walk(span: Span, prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        lines.append(prefix + branch + _describe(span, origin))
        inner = prefix + ("   " if last else "│  ")
        if span.get("parent_span_id") and span["parent_span_id"] not in ids:
            lines.append(inner + f"(parent span {span['parent_span_id']} was not recorded)")
        links = span.get("links") or []
        for link in links[:MAX_LINKS_SHOWN]:
            target = every.get(link["span_id"])
            text = (
                _describe(target, origin)
                if target is not None
                else f"span {link['span_id']} of trace {link['trace_id']} (not recorded)"
            )
            lines.append(inner + "↔ linked: " + text)
        if len(links) > MAX_LINKS_SHOWN:
            lines.append(inner + f"↔ and {len(links) - MAX_LINKS_SHOWN} more links")
        kids = children.get(span["span_id"], [])
        for i, child in enumerate(kids):
            walk(child, inner, i == len(kids) - 1)

    roots = children.get(None, [])
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return lines


def _describe(span: Span, origin: int) -> str:
    attributes = span.get("attributes") or {}
    shown = " ".join(f"{k}={attributes[k]}" for k in SHOWN if k in attributes)
    offset = (span["start_unix_nano"] - origin) / 1e6
    status = "" if span.get("status") != "ERROR" else f" ERROR {span.get('status_message') or ''}"
    return (
        f"{span['name']} [{span.get('service')}] {span['duration_ms']:.1f} ms "
        f"(+{offset:.1f} ms){status}" + (f"  {shown}" if shown else "")
    )
