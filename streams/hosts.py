"""Per-host counters in a Faust table, and the worker's web views (/health, /hosts/{id}/stats).

The detection service counts events and alerts per host; a timer sends the counts once a second to
an internal topic keyed by host id, so the table is partitioned by host and survives restarts
through its changelog.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from sentinel.logs import get_logger
from sentinel.settings import get_settings
from streams.app import app

log = get_logger(__name__)

HOST_ACTIVITY_TOPIC = "sentinel-streams-host-activity"
HOST_ACTIVITY = app.topic(
    HOST_ACTIVITY_TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    internal=True,
)
host_stats = app.Table("host-stats", default=dict)


@app.on_worker_init.connect
def create_host_activity_topic(app: Any, **kwargs: Any) -> None:
    """Create the host-activity topic before the worker's consumer joins its group.

    Left to Faust, the first worker on a fresh broker declared it while joining: its metadata
    arrived a few seconds later and forced a second rebalance, whose producer flush could hang
    until the detection watchdog restarted the loop (and uncommitted events were redelivered).
    Best effort: if the broker cannot be reached now, Faust declares the topic as before.
    """
    from sentinel.kafka.clients import admin_client
    from sentinel.kafka.topics import TopicSpec, create_topics

    settings = get_settings()
    spec = TopicSpec(
        HOST_ACTIVITY_TOPIC, settings.kafka_partitions, {}, "host id", "host counter deltas"
    )
    try:
        admin = admin_client(settings, request_timeout_ms=10_000)
        try:
            created, _ = create_topics(admin, [spec])
        finally:
            admin.close()
    except Exception as exc:  # startup goes on; Faust will declare it
        log.warning("could not create the host-activity topic yet", error=repr(exc))
        return
    if created:
        log.info("created the host-activity topic", partitions=spec.partitions)


@app.agent(HOST_ACTIVITY)
async def count_host_activity(stream: Any) -> None:
    async for event in stream.events():
        host = event.key.decode()
        delta = orjson.loads(event.value)
        stats = dict(host_stats[host])
        stats["events"] = stats.get("events", 0) + delta["events"]
        stats["alerts"] = stats.get("alerts", 0) + delta["alerts"]
        stats["updated_at"] = time.time()
        host_stats[host] = stats


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        from streams.runtime import runtime

        rt = runtime()
        c = rt.counters
        return self.json(
            {
                "status": "ok",
                "app": rt.settings.streams_app_id,
                "packs": {name: p.version for name, p in rt.ruleset.packs.items()},
                "rules": len(rt.ruleset.rules),
                "partitions": rt.partitions,
                "rule_reloads": rt.ruleset.reloads,
                "events": c.events,
                "valid": c.valid,
                "dead_letters": c.dead_letters,
                "alerts_published": c.alerts_published,
                "rule_failures": c.rule_failures,
                "failures_by_rule": dict(rt.detector.failures_by_rule),
                "batches": c.batches,
                "warmed_events": c.warmed_events,
                "detect_s": round(c.detect_s, 3),
                "busy_s": round(c.busy_s, 3),
                "enrichment": {
                    "snapshot": rt.enricher.snapshot,
                    "degraded_keys": c.degraded_enrichment_keys,
                    "adapters": rt.enricher.metrics(),
                },
                "scoring": rt.scoring.as_dict(),
                "triage": dataclasses.asdict(rt.triage),
                "uptime_s": round(time.time() - c.started, 1),
            }
        )


@app.page("/hosts/{host_id}/stats")
class HostStats(View):
    async def get(self, request: Request, host_id: str) -> Response:
        # Route to the worker that owns the key, like @app.table_route, but answer locally when
        # the table's changelog has no metadata yet (nothing written) instead of failing.
        try:
            return await app.router.route_req(host_stats.name, host_id, self.web, request)
        except SameNode:
            pass
        except (TypeError, KeyError):
            pass
        if host_id not in host_stats:
            return self.json({"error": f"no events seen for host '{host_id}'"}, status=404)
        return self.json({"host_id": host_id, **host_stats[host_id]})
