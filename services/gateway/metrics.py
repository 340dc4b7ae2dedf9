"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "chat completion requests by public model, upstream that answered and HTTP status",
            ["model", "upstream", "status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_latency_seconds",
            "time spent waiting on an upstream per call (failed calls included)",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "gateway_request_duration_seconds",
            "whole API requests, from the first byte in to the last byte out, by path and status",
            ["path", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "latency the gateway adds: the request's total minus its time on upstreams",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.quota_rejections = Counter(
            "gateway_quota_rejections",
            "requests refused with 429 by key and quota",
            ["key", "quota"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "targets skipped or failed, so the next target was tried",
            ["model", "upstream", "reason"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            registry=r,
        )
        self.breaker_opened = Gauge(
            "gateway_circuit_breaker_opened",
            "times the upstream's circuit opened since start",
            ["upstream"],
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "tokens by public model and kind (prompt, completion)",
            ["model", "kind"],
            registry=r,
        )
        self.tool_calls = Counter(
            "gateway_tool_calls",
            "sentinel tools run by the gateway, by tool and outcome",
            ["tool", "outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
