"""OpenTelemetry tracing for every Sentinel process: one tracer per service, set up from settings.

Spans go to a JSON Lines file per process under `traces_dir` (the default, read back by
`sentinel trace show`), to an OTLP/HTTP collector, or nowhere. The W3C `traceparent` header carries
the context between processes: Kafka record headers and HTTP headers alike. See
docs/observability.md for the span names of each hop.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sentinel.settings import Settings

__all__ = [
    "Link",
    "SpanKind",
    "TracingError",
    "context_of",
    "flush",
    "links_to",
    "read_spans",
    "span_context_of",
    "traceparent_of",
    "tracer",
]

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
# A span file past this size becomes `<name>.jsonl.1` (replacing the previous one): a worker that
# runs for weeks keeps at most twice this much of its spans.
MAX_FILE_BYTES = 64 * 1024 * 1024
_propagator = TraceContextTextMapPropagator()
_providers: dict[tuple[str, str, str, str], TracerProvider] = {}
_lock = threading.Lock()
_noop = trace.NoOpTracer()


class TracingError(RuntimeError):
    """Tracing cannot be set up as configured; the message says why and what to change."""


def tracer(settings: Settings, service: str) -> Tracer:
    """The tracer of `service` (e.g. "sentinel-worker"), one provider per service and settings.

    Several services may share a process (the tests, the demo): each gets its own provider, so
    each span carries the right `service.name` and each service writes its own span file.
    """
    if settings.otel_exporter == "none":
        return _noop
    name = settings.otel_service_name or service
    key = (name, settings.otel_exporter, str(settings.traces_root), settings.otel_endpoint or "")
    with _lock:
        provider = _providers.get(key)
        if provider is None:
            provider = _providers[key] = _provider(settings, name)
    return provider.get_tracer("sentinel")


def _provider(settings: Settings, name: str) -> TracerProvider:
    exporter: SpanExporter
    if settings.otel_exporter == "otlp":
        exporter = _otlp_exporter(settings)
    else:
        exporter = JsonLinesExporter(settings.traces_root / f"{_safe(name)}-{os.getpid()}.jsonl")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            schedule_delay_millis=settings.otel_flush_interval_s * 1000,
            max_export_batch_size=512,
        )
    )
    return provider


def _otlp_exporter(settings: Settings) -> SpanExporter:
    try:
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        raise TracingError(
            f"SENTINEL_OTEL_EXPORTER=otlp needs the package {OTLP_PACKAGE}, which is not "
            f"installed here: add it to the environment, or set SENTINEL_OTEL_EXPORTER=file "
            f"(spans under {settings.traces_root}) or none"
        ) from None
    kwargs = {"endpoint": settings.otel_endpoint} if settings.otel_endpoint else {}
    exporter: SpanExporter = module.OTLPSpanExporter(**kwargs)
    return exporter


def flush(timeout_ms: int = 10_000) -> None:
    """Export every ended span now (before a process or a test reads the span files)."""
    with _lock:
        providers = list(_providers.values())
    for provider in providers:
        provider.force_flush(timeout_ms)


# --- the W3C trace context across processes


def context_of(traceparent: bytes | str | None) -> Context | None:
    """The parent context a `traceparent` header value names; None when absent or invalid."""
    if not traceparent:
        return None
    value = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    context = _propagator.extract({"traceparent": value})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def span_context_of(traceparent: bytes | str | None) -> SpanContext | None:
    """The remote span a `traceparent` names, for a span link; None when absent or invalid."""
    context = context_of(traceparent)
    return None if context is None else trace.get_current_span(context).get_span_context()


def traceparent_of(span: Span) -> str | None:
    """The `traceparent` that makes `span` the parent of the next hop; None when not traced."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def links_to(traceparents: Sequence[bytes | str | None], limit: int = 32) -> list[Link]:
    """Span links to the distinct remote spans named by `traceparents` (the first `limit`)."""
    links: list[Link] = []
    seen: set[bytes | str] = set()
    for value in traceparents:
        if not value or value in seen:
            continue
        seen.add(value)
        remote = span_context_of(value)
        if remote is not None:
            links.append(Link(remote))
            if len(links) >= limit:
                break
    return links


# --- the file exporter and its reader


class JsonLinesExporter(SpanExporter):
    """One JSON object per span, appended to `path` in batches (the batch processor's thread)."""

    def __init__(self, path: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: Any = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(orjson.dumps(span_record(s), default=str) + b"\n" for s in spans)
        try:
            with self._lock:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = self.path.open("ab")
                self._file.write(lines)
                self._file.flush()
                if self._file.tell() >= self.max_bytes:
                    self._file.close()
                    self._file = None
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export is written and flushed before it returns


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The JSON form of a finished span (hex ids, Unix-nanosecond times, milliseconds)."""
    ctx = span.get_span_context()
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_unix_nano": start,
        "end_unix_nano": end,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
            }
            for link in span.links
        ],
        "events": [
            {"name": e.name, "unix_nano": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


def read_spans(directory: Path) -> Iterator[dict[str, Any]]:
    """Every span in the span files under `directory` (a torn last line is skipped)."""
    files = [*directory.glob("*.jsonl.1"), *directory.glob("*.jsonl")]
    # Per file, the rotated (older) part first.
    for path in sorted(files, key=lambda p: (p.name.removesuffix(".1"), p.suffix == ".jsonl")):
        with path.open("rb") as fh:
            for line in fh:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("span_id"):
                    yield record


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "service"
