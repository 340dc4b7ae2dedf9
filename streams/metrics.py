"""The worker's Prometheus metrics and its `/metrics` page (next to /health).

Nothing here runs per event: the services count in plain integers as they always did (`Counters`,
`TriageStats`, `ScoringStats`, the engine's per-rule stats) and those are read at scrape time; the
few histograms are observed once per batch, alert or scored host. Consumer lag is asked of the
broker when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import collections
from functools import cache
from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sentinel.logs import get_logger
from sentinel.metrics import CONTENT_TYPE, Snapshot, StateCollector, render
from sentinel.settings import get_settings
from streams.app import app

log = get_logger(__name__)

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
TRIAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.batch_seconds = Histogram(
            "sentinel_detection_batch_seconds",
            "one batch from fetch to acknowledged alerts and dead letters",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.alert_latency = Histogram(
            "sentinel_alert_latency_seconds",
            "event time of an alert's source event to the alert's publication (event → alert)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "sentinel_detection_dead_letters",
            "records sent to the dead-letter topic, by the stage that rejected them",
            ["stage"],
            registry=r,
        )
        self.alerts = Counter(
            "sentinel_detection_alerts",
            "alerts published to sentinel.alerts.v1 by detection, by severity",
            ["severity"],
            registry=r,
        )
        self.triage_latency = Histogram(
            "sentinel_triage_latency_seconds",
            "one alert's triage, all gateway attempts included, by outcome",
            ["status"],
            buckets=TRIAGE_BUCKETS,
            registry=r,
        )
        self.model_scores = Histogram(
            "sentinel_model_score",
            "host-anomaly scores of a scoring round, by model slot (champion, challenger)",
            ["slot"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "sentinel_consumer_lag",
            "records behind the end of the partition (end offset - position), per consumer group",
            ["group", "topic", "partition"],
            registry=r,
        )
        r.register(Snapshot(_runtime_families))
        r.register(StateCollector(get_settings()))
        self.consumers: dict[str, AIOKafkaConsumer] = {}  # group -> a running consumer

    def count_batch(self, dead: list[Any], alerts: list[dict[str, Any]], busy_s: float) -> None:
        """Once per completed batch (dead letters and alerts are few; events are not looped)."""
        self.batch_seconds.observe(busy_s)
        if dead:
            for stage, n in collections.Counter(d.stage for d in dead).items():
                self.dead_letters.labels(stage).inc(n)
        if alerts:
            for severity, n in collections.Counter(str(a["severity"]) for a in alerts).items():
                self.alerts.labels(severity).inc(n)

    async def update_lag(self) -> None:
        self.lag.clear()
        for group, consumer in list(self.consumers.items()):
            try:
                assigned = list(consumer.assignment())
                if not assigned:
                    continue
                ends = await asyncio.wait_for(consumer.end_offsets(assigned), 5.0)
                for tp in assigned:
                    position = await asyncio.wait_for(consumer.position(tp), 5.0)
                    behind = max(0, ends.get(tp, position) - position)
                    self.lag.labels(group, tp.topic, str(tp.partition)).set(behind)
            except Exception as exc:  # a scrape must answer even while the group rebalances
                log.debug("consumer lag unavailable", group=group, error=repr(exc))


@cache
def worker_metrics() -> WorkerMetrics:
    return WorkerMetrics()


def _runtime_families() -> list[Any]:
    from streams.runtime import runtime

    rt = runtime()
    c = rt.counters
    families: list[Any] = [
        CounterMetricFamily(
            "sentinel_detection_events", "records read from sentinel.events.v1", value=c.events
        ),
        CounterMetricFamily(
            "sentinel_detection_valid_events", "records that passed validation", value=c.valid
        ),
        CounterMetricFamily("sentinel_detection_batches", "batches completed", value=c.batches),
        CounterMetricFamily(
            "sentinel_detection_rule_failures",
            "rule evaluations stopped by an error or a limit",
            value=c.rule_failures,
        ),
        CounterMetricFamily(
            "sentinel_detection_warmed_events",
            "events replayed to rebuild windows",
            value=c.warmed_events,
        ),
        CounterMetricFamily(
            "sentinel_detection_busy_seconds",
            "time in validate, enrich, detect, publish and acks",
            value=c.busy_s,
        ),
        CounterMetricFamily(
            "sentinel_enrichment_degraded_keys",
            "enrichment keys answered from local feeds only (remote degraded)",
            value=c.degraded_enrichment_keys,
        ),
        GaugeMetricFamily("sentinel_rules_loaded", "rules loaded", value=len(rt.ruleset.rules)),
        CounterMetricFamily(
            "sentinel_rule_reloads", "rule pack reloads applied", value=rt.ruleset.reloads
        ),
    ]
    evaluations = CounterMetricFamily(
        "sentinel_rule_evaluations", "events a rule was run on", labels=["rule"]
    )
    matches = CounterMetricFamily("sentinel_rule_matches", "alerts a rule emitted", labels=["rule"])
    seconds = CounterMetricFamily(
        "sentinel_rule_eval_seconds", "time spent running the rule", labels=["rule"]
    )
    native = CounterMetricFamily(
        "sentinel_rule_native_evaluations",
        "evaluations the rule's native fast path decided without running Rhai",
        labels=["rule"],
    )
    for rule, stats in sorted(rt.ruleset.engine.stats().items()):
        evaluations.add_metric([rule], stats["evals"])
        matches.add_metric([rule], stats["matches"])
        seconds.add_metric([rule], stats["total_ns"] / 1e9)
        native.add_metric([rule], stats["native"])
    failures = CounterMetricFamily(
        "sentinel_rule_failures", "evaluations of the rule that failed", labels=["rule"]
    )
    for rule, n in sorted(rt.detector.failures_by_rule.items()):
        failures.add_metric([rule], n)
    families += [evaluations, matches, seconds, native, failures]
    t = rt.triage
    families += [
        CounterMetricFamily("sentinel_triage_triaged", "alerts triaged", value=t.triaged),
        CounterMetricFamily(
            "sentinel_triage_failed", "alerts whose triage failed after retries", value=t.failed
        ),
        CounterMetricFamily("sentinel_triage_retries", "gateway calls retried", value=t.retries),
    ]
    skipped = CounterMetricFamily(
        "sentinel_triage_skipped", "alerts not sent to the gateway, by reason", labels=["reason"]
    )
    skipped.add_metric(["below_severity"], t.skipped_below_severity)
    skipped.add_metric(["duplicate"], t.duplicates)
    families.append(skipped)
    s = rt.scoring
    families += [
        CounterMetricFamily("sentinel_scoring_rounds", "scoring rounds completed", value=s.rounds),
        CounterMetricFamily(
            "sentinel_scoring_windows",
            "host windows scored by the champion",
            value=s.windows_scored,
        ),
        CounterMetricFamily(
            "sentinel_scoring_model_alerts", "model alerts published", value=s.model_alerts
        ),
        CounterMetricFamily(
            "sentinel_scoring_shadow_disagreements",
            "hosts where champion and challenger decided differently",
            value=s.shadow_disagreements,
        ),
        GaugeMetricFamily(
            "sentinel_scoring_healthy",
            "0 when the last scoring round failed",
            value=0.0 if s.last_error else 1.0,
        ),
    ]
    return families


@app.page("/metrics")
class Metrics(View):
    async def get(self, request: Request) -> Response:
        metrics = worker_metrics()
        await metrics.update_lag()
        return self.bytes(render(metrics.registry), content_type=CONTENT_TYPE)
