"""The `detect_threats` agent: batches from the events topic through validate → detect → publish.

A batch's dead letters and alerts are delivered (acknowledged by the broker) before the batch's
events are acked, so Faust commits an offset only after what it caused is durable
(at-least-once; alert ids are deterministic, so a replay republishes the same ids).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson

from sentinel.logs import get_logger
from streams.app import TOPICS, app
from streams.detection.pipeline import RawRecord
from streams.detection.warmup import warm_up
from streams.hosts import HOST_ACTIVITY
from streams.runtime import runtime

log = get_logger(__name__)


@app.agent(TOPICS["events"])
async def detect_threats(stream: Any) -> None:
    rt = runtime()
    settings, counters = rt.settings, rt.counters
    async for batch in stream.take_events(
        settings.streams_batch_size, within=settings.streams_batch_within_s
    ):
        records = [
            RawRecord(
                e.message.key,
                e.message.value,
                e.message.topic,
                e.message.partition,
                e.message.offset,
            )
            for e in batch
        ]
        await _warm_new_partitions(rt, batch)
        started = time.perf_counter()
        outcome = await rt.process(records)
        counters.detect_s += time.perf_counter() - started
        sends = [
            await TOPICS["dlq"].send(key=d.key, value=d.value, headers=d.headers(), force=True)
            for d in outcome.dead
        ]
        sends += [
            await TOPICS["alerts"].send(key=a["id"].encode(), value=orjson.dumps(a), force=True)
            for a in outcome.alerts
        ]
        for e in outcome.events:
            rt.host_events[e["host"]["id"]] += 1
        for a in outcome.alerts:
            rt.host_alerts[a["host"]["id"]] += 1
        await asyncio.gather(*sends)  # durable before take_events acks the batch
        counters.busy_s += time.perf_counter() - started
        counters.batches += 1
        counters.events += len(records)
        counters.valid += len(outcome.events)
        counters.dead_letters += len(outcome.dead)
        counters.alerts_published += len(outcome.alerts)
        counters.rule_failures += outcome.rule_failures


@app.timer(interval=1.0)
async def flush_host_activity() -> None:
    """Host counters are informational: sent once a second, not with every batch."""
    rt = runtime()
    events, alerts = rt.host_events, rt.host_alerts
    rt.host_events, rt.host_alerts = Counter(), Counter()
    for host in events.keys() | alerts.keys():
        delta = {"events": events.get(host, 0), "alerts": alerts.get(host, 0)}
        await HOST_ACTIVITY.send(key=host.encode(), value=orjson.dumps(delta), force=True)


async def _warm_new_partitions(rt: Any, batch: list[Any]) -> None:
    firsts: dict[tuple[str, int], Any] = {}
    for event in batch:
        tp = (event.message.topic, event.message.partition)
        if tp not in rt.warmed and tp not in firsts:
            firsts[tp] = event.message
    for (topic, partition), message in firsts.items():
        rt.warmed.add((topic, partition))
        # Bounded: a warm-up that cannot finish (broker trouble) must not stall the stream; the
        # windows of that partition then start from what arrives next.
        task = asyncio.ensure_future(
            warm_up(
                rt.settings,
                rt.detector,
                topic,
                partition,
                message.offset,
                int(message.timestamp * 1000),
            )
        )
        done, _ = await asyncio.wait({task}, timeout=rt.settings.streams_warmup_timeout_s)
        if task in done and task.exception() is None:
            rt.counters.warmed_events += task.result()
        else:
            if task not in done:
                task.cancel()
            log.warning(
                "window warm-up abandoned",
                topic=topic,
                partition=partition,
                error=repr(task.exception()) if task in done else "timed out",
            )


@app.on_partitions_revoked.connect
async def forget_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    # A partition that comes back later must be warmed again from its committed offset.
    rt = runtime()
    for tp in revoked:
        rt.warmed.discard((tp.topic, tp.partition))
