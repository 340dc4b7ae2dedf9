"""The triage service of a worker: alerts at or above `triage_min_severity` go to the gateway and
their verdicts to `sentinel.alerts.triaged.v1`.

It reads the alerts topic with its own consumer group (`<app id>.triage`), apart from detection, so
a slow or failed gateway delays triage and nothing else. A batch's alerts are triaged concurrently
(`triage_concurrency`); its offsets are committed once every triage record of the batch (triaged
or failed) is acknowledged by the broker. Suppression republishes an alert (same id, higher count):
an id this worker has already triaged is not sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service
from opentelemetry.trace import Status, StatusCode

from sentinel.kafka import ALERTS
from sentinel.logs import get_logger
from sentinel.tracing import SpanKind, context_of, traceparent_of
from streams.app import TOPICS, app
from streams.metrics import worker_metrics
from streams.runtime import Runtime, runtime
from streams.triage.prompts import load_prompt, rule_metadata
from streams.triage.triage import GatewayTriage, TriageStats, wants_triage

log = get_logger(__name__)

SEEN_IDS = 50_000  # alert ids remembered as triaged by this worker
_ENRICHED_FIELDS = (("dst_ip", "ip"), ("src_ip", "ip"), ("sha256", "file_hash"))


def evidence_for(rt: Runtime, alert: dict[str, Any]) -> dict[str, Any]:
    """The alert, its rule's metadata and what the worker's feeds know about its artifacts."""
    rule_id = str(alert["rule"]["id"])
    found = rt.ruleset.rules.get(rule_id)
    if found is not None:
        pack, rule = found
        rule_doc = {
            "id": rule.id,
            "pack": pack.name,
            "title": rule.title,
            "severity": rule.severity,
            "kinds": list(rule.kinds),
            "mitre": list(rule.mitre),
            "description": rule.description or rule_metadata(rule_id).get("description", ""),
        }
    else:
        rule_doc = rule_metadata(rule_id)
    enrichment: dict[str, Any] = {}
    feeds = {"ip": rt.enricher.ip, "file_hash": rt.enricher.file_hashes}
    host = rt.enricher.hosts.lookup(str(alert["host"]["id"]))
    if host is not None:
        enrichment["host"] = dict(host)
    context = alert.get("context") or {}
    for name, kind in _ENRICHED_FIELDS:
        key = context.get(name)
        if isinstance(key, str) and key:
            record = feeds[kind].lookup(key)
            if record is not None:
                enrichment[name] = dict(record)
    return {"alert": alert, "rule": rule_doc, "enrichment": enrichment}


@app.service
class TriageService(Service):
    def __post_init__(self) -> None:
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.stats = TriageStats()

    @Service.task
    async def _consume(self) -> None:
        rt = runtime()
        settings = rt.settings
        if not settings.triage_enabled:
            return
        triage = GatewayTriage(settings, load_prompt(settings.triage_prompt))
        self.stats = triage.stats
        rt.triage = triage.stats
        try:
            while not self.should_stop:
                consumer = AIOKafkaConsumer(
                    ALERTS,
                    bootstrap_servers=settings.kafka_bootstrap,
                    group_id=f"{settings.streams_app_id}.triage",
                    client_id=f"{settings.streams_app_id}-triage",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_records=100,
                )
                try:
                    await consumer.start()
                except KafkaConnectionError as exc:
                    log.warning("broker unavailable; retrying", error=repr(exc))
                    await consumer.stop()
                    await self.sleep(2.0)
                    continue
                group = f"{settings.streams_app_id}.triage"
                worker_metrics().consumers[group] = consumer
                try:
                    await self._batches(rt, consumer, triage)
                finally:
                    worker_metrics().consumers.pop(group, None)
                    await consumer.stop()
        finally:
            await triage.close()

    async def _batches(
        self, rt: Runtime, consumer: AIOKafkaConsumer, triage: GatewayTriage
    ) -> None:
        limit = asyncio.Semaphore(rt.settings.triage_concurrency)

        async def one(record: ConsumerRecord) -> Any:
            try:
                return await triage_record(record)
            except Exception as exc:  # one odd alert must not stop the others' triage
                log.error("alert not triaged", offset=record.offset, error=repr(exc))
                return None

        async def triage_record(record: ConsumerRecord) -> Any:
            alert = orjson.loads(record.value or b"")
            if not wants_triage(alert, rt.settings.triage_min_severity):
                triage.stats.skipped_below_severity += 1
                return None
            if alert["id"] in self.seen:
                triage.stats.duplicates += 1
                return None
            self.seen[alert["id"]] = None
            while len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
            # The alert's trace (its source event's, through detection) goes on to the gateway.
            parent = context_of(dict(record.headers or ()).get("traceparent"))
            started = time.perf_counter()
            async with limit:
                with rt.tracer.start_as_current_span(
                    "triage.alert",
                    context=parent,
                    kind=SpanKind.CLIENT,
                    attributes={
                        "alert.id": alert["id"],
                        "rule.id": str(alert["rule"]["id"]),
                        "severity": str(alert["severity"]),
                        "host.id": str(alert["host"]["id"]),
                    },
                ) as span:
                    done = await triage.triage(alert, evidence_for(rt, alert), traceparent_of(span))
                    span.set_attribute("triage.status", str(done["status"]))
                    span.set_attribute("triage.attempts", int(done["attempts"]))
                    if done["status"] != "triaged":
                        span.set_status(Status(StatusCode.ERROR, str(done.get("error", ""))))
            worker_metrics().triage_latency.labels(str(done["status"])).observe(
                time.perf_counter() - started
            )
            return await TOPICS["triaged"].send(
                key=alert["id"].encode(), value=orjson.dumps(done), force=True
            )

        while not self.should_stop:
            fetched: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
                timeout_ms=500
            )
            if not fetched:
                continue
            records = [r for batch in fetched.values() for r in batch]
            sends = await asyncio.gather(*(one(r) for r in records))
            await asyncio.gather(*(s for s in sends if s is not None))
            offsets = {
                tp: OffsetAndMetadata(batch[-1].offset + 1, "") for tp, batch in fetched.items()
            }
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("triage commit failed; alerts will be triaged again", error=repr(exc))
