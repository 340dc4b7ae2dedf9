"""The detection service: batches from the events topic through validate → enrich → detect → publish.

The events topic is read in batches by the worker's own consumer group
(`Settings.streams_detection_group`) instead of a per-message Faust stream: profiling showed three
quarters of a worker's CPU in Faust's per-message path (fetcher, conductor, stream iteration, acks),
which held one worker to ~3.5k events/s; a batch of fetched records goes to the engine as it came.
Faust still runs the worker: its lifecycle, the web views, the host table, the timers, the rules.

A batch's dead letters and alerts are delivered (acknowledged by the broker) before the batch's
offsets are committed, so an offset is committed only after what it caused is durable
(at-least-once; alert ids are deterministic, so a replay republishes the same ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service
from sentinel_rhai import BatchResult

from sentinel.kafka import EVENTS
from sentinel.logs import get_logger
from streams.app import TOPICS, app
from streams.detection.pipeline import Outcome, engine_payload
from streams.detection.traces import alert_spans, batch_span
from streams.detection.warmup import warm_up
from streams.hosts import HOST_ACTIVITY
from streams.metrics import worker_metrics
from streams.runtime import Runtime, runtime

log = get_logger(__name__)

# How long a revocation waits for the batch in flight to be published and committed.
REVOKE_WAIT_S = 30.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: DetectionService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Publish and commit the batch in flight before another worker gets its partitions; a
        # partition that comes back later is warmed with what was processed elsewhere meanwhile.
        try:
            await asyncio.wait_for(self.service.drain(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning("batch still in flight at revocation; its events will be redelivered")
        runtime().partitions = []

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        rt = runtime()
        rt.partitions = sorted(tp.partition for tp in assigned)
        log.info("events partitions assigned", partitions=rt.partitions)


@dataclass
class Batch:
    """One fetched batch between `submit` (validated, enriched, in the engine) and `complete`."""

    fetched: dict[TopicPartition, list[ConsumerRecord]]
    outcome: Outcome
    result: asyncio.Future[BatchResult] | None  # the engine's answer; None: no valid events
    started: float
    size: int
    started_ns: int  # wall clock, for the batch's span
    records: list[ConsumerRecord]  # in validation order, for the alerts' source records


@app.service
class DetectionService(Service):
    """Consumes `sentinel.events.v1` in batches for as long as the worker runs.

    Two batches overlap: while the engine evaluates batch N on its own thread (it releases the
    GIL), the event loop publishes batch N-1 and fetches, validates and enriches batch N+1.
    Batches are evaluated, published and committed strictly in the order they were fetched.
    """

    def __post_init__(self) -> None:
        self.lock = asyncio.Lock()  # held while a batch is submitted or completed
        self.inflight: Batch | None = None
        self.uncommitted: dict[TopicPartition, int] = {}  # next offsets of completed batches
        self.last_commit = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self.engine_thread = ThreadPoolExecutor(1, thread_name_prefix="rules-engine")
        self.progress = time.monotonic()  # the batch loop last went round
        self.batches: asyncio.Task[None] | None = None
        self.stalls = 0
        self.restarting = False  # the watchdog cancelled the batch loop (not a shutdown)

    async def on_stop(self) -> None:
        self.engine_thread.shutdown(wait=False, cancel_futures=True)

    @Service.task
    async def _consume(self) -> None:
        rt = runtime()
        settings = rt.settings
        _tune_gc()
        while not self.should_stop:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.streams_detection_group,
                client_id=f"{settings.streams_app_id}-detection",
                enable_auto_commit=False,
                auto_offset_reset=settings.streams_auto_offset_reset,
                max_poll_records=settings.streams_batch_size,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_wait_ms=int(settings.streams_batch_within_s * 1000),
            )
            consumer.subscribe([EVENTS], listener=_Rebalance(self))
            try:
                await consumer.start()
            except KafkaConnectionError as exc:
                log.warning("broker unavailable; retrying", error=repr(exc))
                await consumer.stop()
                await self.sleep(2.0)
                continue
            self.consumer = consumer
            worker_metrics().consumers[settings.streams_detection_group] = consumer
            self.progress = time.monotonic()
            self.batches = asyncio.ensure_future(self._batches(rt, consumer))
            try:
                await self.batches
                await self.drain()
            except asyncio.CancelledError:
                if not self.restarting:
                    raise
                self.restarting = False
                # The watchdog cancelled a stalled loop: what it had not committed is redelivered
                # to the next consumer (alert ids are deterministic).
                self.inflight, self.uncommitted = None, {}
            finally:
                self.consumer = None
                worker_metrics().consumers.pop(settings.streams_detection_group, None)
                await consumer.stop()  # leaves the group: its partitions move on at once

    async def _batches(self, rt: Runtime, consumer: AIOKafkaConsumer) -> None:
        timeout_ms = int(rt.settings.streams_batch_within_s * 1000)
        while not self.should_stop:
            # With a batch in flight, take only what is already fetched: when nothing is, the
            # batch in flight is completed now rather than after the wait.
            fetched = await consumer.getmany(
                timeout_ms=0 if self.inflight is not None else timeout_ms,
                max_records=rt.settings.streams_batch_size,
            )
            async with self.lock:
                # Records of partitions revoked since the fetch are their new owner's to process.
                assigned = consumer.assignment()
                fetched = {tp: records for tp, records in fetched.items() if tp in assigned}
                batch = await self.submit(rt, fetched) if fetched else None
                if self.inflight is not None:
                    await self.complete(rt, self.inflight)
                self.inflight = batch
                await self.commit(force=batch is None)
            self.progress = time.monotonic()

    @Service.task
    async def _watchdog(self) -> None:
        """A batch loop that has not gone round for `streams_stall_s` is logged with every
        thread's and task's stack, and restarted with a fresh consumer."""
        limit = runtime().settings.streams_stall_s
        while not self.should_stop:
            await self.sleep(min(5.0, limit / 4))
            stalled = time.monotonic() - self.progress
            task = self.batches
            if task is None or task.done() or stalled < limit:
                continue
            self.stalls += 1
            log.error(
                "detection loop stalled; restarting its consumer",
                stalled_s=round(stalled, 1),
                stacks=_stacks(),
            )
            self.progress = time.monotonic()
            self.restarting = True
            task.cancel()

    async def drain(self) -> None:
        """Finish the batch in flight, if any, and commit (revocation, shutdown)."""
        async with self.lock:
            if self.inflight is not None:
                batch, self.inflight = self.inflight, None
                await self.complete(runtime(), batch)
            await self.commit(force=True)

    async def submit(
        self, rt: Runtime, fetched: dict[TopicPartition, list[ConsumerRecord]]
    ) -> Batch:
        """Warm new partitions, validate and enrich, and hand the events to the engine thread."""
        await _warm_windows(rt, fetched, self.engine_thread)
        for tp, batch in fetched.items():
            rt.evaluated[(tp.topic, tp.partition)] = batch[-1].offset
        records = [r for batch in fetched.values() for r in batch]
        started, started_ns = time.perf_counter(), time.time_ns()
        outcome = await rt.prepare(records)
        result = None
        if outcome.events:
            payload = engine_payload(outcome.events, outcome.raw)
            result = asyncio.get_running_loop().run_in_executor(
                self.engine_thread, rt.ruleset.engine.evaluate_jsonl, payload
            )
        return Batch(fetched, outcome, result, started, len(records), started_ns, records)

    async def complete(self, rt: Runtime, batch: Batch) -> None:
        """Alerts from the engine's result; publish; wait for the acks; then the batch's offsets
        may be committed."""
        outcome = batch.outcome
        if batch.result is not None:
            rt.detector.collect(outcome, await batch.result)
        counters = rt.counters
        counters.detect_s += time.perf_counter() - batch.started
        sends = [
            await TOPICS["dlq"].send(key=d.key, value=d.value, headers=d.headers(), force=True)
            for d in outcome.dead
        ]
        span = batch_span(rt.tracer, batch.fetched, batch.started_ns, batch.size)
        traced = alert_spans(rt.tracer, span, batch.records, outcome, batch.started_ns)
        sends += [
            await TOPICS["alerts"].send(
                key=a["id"].encode(),
                value=orjson.dumps(a),
                headers=traced[i][1] if traced else None,  # the alert's trace, for triage
                force=True,
            )
            for i, a in enumerate(outcome.alerts)
        ]
        if rt.settings.scoring_enabled:
            rt.live_windows.observe(outcome.events)
        host_events = rt.host_events
        for e in outcome.events:
            host_events[e["host"]["id"]] += 1
        for a in outcome.alerts:
            rt.host_alerts[a["host"]["id"]] += 1
        await asyncio.gather(*sends)  # durable before the offsets are committed
        busy = time.perf_counter() - batch.started
        counters.busy_s += busy
        _end_spans(span, traced, outcome, batch.started_ns + int(busy * 1e9))
        worker_metrics().count_batch(outcome.dead, outcome.alerts, busy)
        counters.batches += 1
        counters.events += batch.size
        counters.valid += len(outcome.events)
        counters.dead_letters += len(outcome.dead)
        counters.alerts_published += len(outcome.alerts)
        counters.rule_failures += outcome.rule_failures
        for tp, records in batch.fetched.items():
            self.uncommitted[tp] = records[-1].offset + 1

    async def commit(self, *, force: bool = False) -> None:
        """Commit what completed batches covered: every `STREAMS_COMMIT_INTERVAL_S`, or now
        (`force`: the stream went idle, partitions are revoked, the worker stops)."""
        consumer = self.consumer
        now = time.monotonic()
        due = force or now - self.last_commit >= runtime().settings.streams_commit_interval_s
        if consumer is None or not self.uncommitted or not due:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self.uncommitted.items()
            if tp in assigned
        }
        self.uncommitted, self.last_commit = {}, now
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: their new owner replays from the last commit
            # and publishes the same alert ids.
            log.warning("commit failed; events will be redelivered", error=repr(exc))


@app.timer(interval=1.0)
async def flush_host_activity() -> None:
    """Host counters are informational: sent once a second, not with every batch."""
    rt = runtime()
    events, alerts = rt.host_events, rt.host_alerts
    rt.host_events, rt.host_alerts = Counter(), Counter()
    for host in events.keys() | alerts.keys():
        delta = {"events": events.get(host, 0), "alerts": alerts.get(host, 0)}
        await HOST_ACTIVITY.send(key=host.encode(), value=orjson.dumps(delta), force=True)


async def _warm_windows(
    rt: Runtime,
    fetched: Mapping[TopicPartition, Sequence[ConsumerRecord]],
    engine_thread: ThreadPoolExecutor,
) -> None:
    """Bring the windows of each partition of this batch up to its first record, all at once.

    The engine's windows hold what this process evaluated; `rt.evaluated` has, per partition,
    the last offset evaluated. A batch that goes on from there needs nothing, even after a
    rebalance that gave the partition straight back. One that starts later (the partition is
    new here, or another worker processed it meanwhile) is warmed with the events in between,
    within the warm-up span. One that starts at or before it (records delivered again, after a
    consumer restart) would count those events twice: every window is then reset, and every
    partition warmed afresh as it comes.
    """
    again = sorted(
        tp.partition
        for tp, batch in fetched.items()
        if batch and rt.evaluated.get((tp.topic, tp.partition), -1) >= batch[0].offset
    )
    if again:
        log.warning("records delivered again: windows reset and warmed afresh", partitions=again)
        await asyncio.get_running_loop().run_in_executor(engine_thread, rt.ruleset.reset_windows)
        rt.evaluated.clear()
    tasks: dict[asyncio.Future[int], TopicPartition] = {}
    for tp, batch in fetched.items():
        if not batch:
            continue
        first, last = batch[0], rt.evaluated.get((tp.topic, tp.partition))
        if last is not None and first.offset == last + 1:
            continue
        task = asyncio.ensure_future(
            warm_up(
                rt.settings,
                rt.detector,
                tp.topic,
                tp.partition,
                first.offset,
                first.timestamp,
                after_offset=last,
            )
        )
        tasks[task] = tp
    if not tasks:
        return
    log.info("warming windows", partitions=sorted(tp.partition for tp in tasks.values()))
    # Bounded: a warm-up that cannot finish (broker trouble) must not stall the stream; the
    # windows of that partition then start from what arrives next.
    done, _ = await asyncio.wait(tasks, timeout=rt.settings.streams_warmup_timeout_s)
    for task, tp in tasks.items():
        if task in done and task.exception() is None:
            rt.counters.warmed_events += task.result()
            continue
        if task not in done:
            task.cancel()
        log.warning(
            "window warm-up abandoned",
            topic=tp.topic,
            partition=tp.partition,
            error=repr(task.exception()) if task in done else "timed out",
        )


def _end_spans(span: Any, traced: list[tuple[Any, Any]], outcome: Outcome, end_ns: int) -> None:
    """End the batch's and its alerts' spans once the alerts are acknowledged; observe the
    event → alert latency of each alert (event time of its source event to now)."""
    span.set_attribute("detection.events", len(outcome.events))
    span.set_attribute("detection.dead_letters", len(outcome.dead))
    span.set_attribute("detection.alerts", len(outcome.alerts))
    span.set_attribute("detection.rule_failures", outcome.rule_failures)
    latency = worker_metrics().alert_latency
    now = time.time()
    for alert in outcome.alerts:
        if alert.get("count", 1) != 1:  # a republished alert (suppression): not a new detection
            continue
        with contextlib.suppress(ValueError, TypeError, KeyError):
            latency.observe(max(0.0, now - datetime.fromisoformat(alert["ts"]).timestamp()))
    for alert_span, _ in traced:
        alert_span.end(end_time=end_ns)
    span.end(end_time=end_ns)


def _stacks() -> str:
    """Every thread's stack and every asyncio task's, as text (for a stall report)."""
    import io
    import sys
    import threading
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    out = io.StringIO()
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame)))
    for task in asyncio.all_tasks():
        out.write(f"--- task {task.get_name()} {task.get_coro()!r}\n")
        task.print_stack(limit=8, file=out)
    return out.getvalue()


def _tune_gc() -> None:
    """Keep the cyclic collector off the hot path: a batch allocates tens of thousands of
    short-lived, acyclic objects (freed by reference counting) and each collection would also walk
    the worker's long-lived heap, so that heap is frozen after start-up and collections are rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
