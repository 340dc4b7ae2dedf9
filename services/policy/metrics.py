"""The policy service's Prometheus metrics and request spans: requests by route and status, their
latency, ingested events, and the public `GET /metrics`."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from opentelemetry.trace import Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel.metrics import CONTENT_TYPE, render
from sentinel.tracing import SpanKind, context_of

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PolicyMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter(
            "policy_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "policy_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_events = Counter(
            "policy_ingest_events",
            "events of POST /ingest: accepted (produced and acknowledged) or rejected (contract)",
            ["outcome"],
            registry=r,
        )


class Observe:
    """Pure ASGI: a server span per request (continuing `traceparent`) and the request metrics."""

    def __init__(self, app: ASGIApp, metrics: PolicyMetrics, tracer: Tracer) -> None:
        self.app, self.metrics, self.tracer = app, metrics, tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        caller = dict(scope["headers"]).get(b"traceparent")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=context_of(caller), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                # The route template, not the path: pack names would make endless label values.
                found = scope.get("route")
                route = str(getattr(found, "path", "(unmatched)"))
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status)))
                self.metrics.requests.labels(scope["method"], route, str(status)).inc()
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)


router = APIRouter()


# Public like /health, and outside the OpenAPI document: it is for Prometheus, not for clients
# (the API's routes and their roles stay one table, services/policy/auth.py).
@router.get("/metrics", include_in_schema=False, response_class=Response)
def metrics(request: Request) -> Response:
    registry: PolicyMetrics = request.app.state.metrics
    return Response(render(registry.registry), media_type=CONTENT_TYPE)
