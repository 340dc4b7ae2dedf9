"""One JSON line per API request (to requests.jsonl and through structlog), redacted, plus the
W3C trace context: accepted from `traceparent`, generated when absent, sent on to upstreams and
returned in the response's `traceparent` header. The request is an OpenTelemetry server span
(sentinel/tracing.py) whose ids are the ones logged and sent on.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.trace import Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel.logs import get_logger
from sentinel.tracing import SpanKind, context_of
from services.gateway.metrics import GatewayMetrics
from services.gateway.redaction import Redactor

log = get_logger("services.gateway.requests")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SUMMARY = (
    "trace_id",
    "method",
    "path",
    "status",
    "latency_ms",
    "key",
    "model",
    "upstream",
    "fallbacks",
    "tokens",
    "error",
)


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    span_id: str  # this gateway's span: the parent of the upstream calls
    parent_id: str | None
    flags: str = "01"

    @classmethod
    def from_header(cls, value: str | None) -> Trace:
        """Continue the caller's trace, or start one when the header is absent or invalid."""
        span = secrets.token_hex(8)
        match = _TRACEPARENT.match(value.strip().lower()) if value else None
        if match and match[1] != "0" * 32 and match[2] != "0" * 16:
            return cls(match[1], span, match[2], match[3])
        return cls(secrets.token_hex(16), span, None)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass
class RequestContext:
    """What a handler learns about its request, written as the request's log line at the end."""

    trace: Trace
    headers: dict[str, str]
    record: dict[str, Any] = field(default_factory=dict)
    upstream_s: float = 0.0
    response_headers: dict[str, str] = field(default_factory=dict)


class RequestLog:
    """Appends redacted JSON lines to a file; thread-safe."""

    # Lines are buffered and written at most this long after their request (one write call per
    # request was a tenth of the gateway's CPU), and at close.
    FLUSH_S = 0.5

    def __init__(self, path: Path, redactor: Redactor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.redactor = redactor
        self._file = path.open("ab")
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Redact and append `record`; its `request.body` and `response` are bodies (paths
        apply), `request.headers` are headers. Returns what was written."""
        redactor = self.redactor
        clean: dict[str, Any] = {}
        for name, value in record.items():
            if name == "request":
                clean[name] = {
                    "headers": redactor.headers_of(value["headers"]),
                    **({"body": redactor.body(value["body"])} if "body" in value else {}),
                }
            elif name == "response":
                clean[name] = redactor.body(value)
            else:
                clean[name] = redactor.value(value)
        line = orjson.dumps(clean, default=str) + b"\n"
        now = time.monotonic()
        with self._lock:
            self._file.write(line)
            if now - self._flushed >= self.FLUSH_S:
                self._file.flush()
                self._flushed = now
        return clean

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._flushed = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _end_span(span: Any, status: int, ctx: RequestContext) -> None:
    span.set_attribute("http.response.status_code", status)
    for name in ("model", "upstream", "key", "rule"):
        value = ctx.record.get(name)
        if isinstance(value, str) and value:
            span.set_attribute(f"gateway.{name}", value)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(ctx.record.get("error") or status)))
    span.end()


class RequestLogMiddleware:
    """ASGI middleware around /v1/*: trace context in, traceparent out, one log line per
    request once its last byte is sent (streams included), and the overhead histogram."""

    def __init__(
        self, app: ASGIApp, requests_log: RequestLog, metrics: GatewayMetrics, tracer: Tracer
    ) -> None:
        self.app = app
        self.requests_log = requests_log
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        caller = headers.get("traceparent")
        span = self.tracer.start_span(
            f"{scope['method']} {scope['path']}",
            context=context_of(caller),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        )
        trace = Trace.from_header(caller)
        if span.is_recording():  # the span's ids are the gateway's: logged and sent upstream
            ids = span.get_span_context()
            trace = Trace(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", trace.parent_id)
        ctx = RequestContext(trace, headers)
        scope.setdefault("state", {})["gateway"] = ctx
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"traceparent", trace.header().encode())]
                extra += [(k.encode(), v.encode()) for k, v in ctx.response_headers.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            total = time.perf_counter() - started
            if status == 200 and ctx.upstream_s:
                self.metrics.overhead.observe(max(total - ctx.upstream_s, 0.0))
            path = scope["path"] if status != 404 else "(unknown)"  # bounded label values
            self.metrics.request_latency.labels(path, str(status)).observe(total)
            _end_span(span, status, ctx)
            record = {
                "ts": datetime.now(UTC).isoformat(),
                "trace_id": trace.trace_id,
                "span_id": trace.span_id,
                "parent_span_id": trace.parent_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round(total * 1000, 3),
                "upstream_ms": round(ctx.upstream_s * 1000, 3),
                **ctx.record,
            }
            request: dict[str, Any] = {"headers": headers}
            if "request_body" in record:
                request["body"] = record.pop("request_body")
            record["request"] = request
            clean = self.requests_log.write(record)
            # The file has the whole line; the process log gets a summary of failures (and of
            # every request at debug level): rendering each success twice cost a fifth of the
            # gateway's CPU per request.
            level = log.warning if status >= 400 else log.debug
            level("gateway request", **{k: clean[k] for k in _SUMMARY if k in clean})
