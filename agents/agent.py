"""The host agent: sensors -> bounded queue -> disk spool -> Kafka, losing nothing on the way.

    sensor threads ──offer()──> queue (bounded) ──writer──> Spool ──shipper──> sentinel.events.v1
                                 block / drop per kind       fsync policy      idempotent, acks=all

- `offer` (in each sensor's thread) applies the rule-driven and configured sampling, stamps
  `schema`, `id` (ULID), `ts`, `host`, `sensor` (name, version and the agent's sequence number
  `seq`), validates against the event contract and queues the encoded event. A rejected event
  is counted and written to `rejected.jsonl` with its reason, never silently lost.
- The writer appends queued events to the spool in order (see `agents/spool.py` for the fsync
  policy). The shipper reads the spool from its cursor, produces each chunk with the host id
  as key, waits for the acknowledgement and only then commits the cursor. While the broker is
  down the chunk stays in the idempotent producer (retried with the same sequence numbers, so
  no duplicates) and new events pile up in the spool; when it returns they follow in order.
- Counters (`stats()`): produced, spooled, dropped (queue full + spool cap), sampled, filtered,
  invalid, resent, per-sensor counters, spool depth. Written to `stats.json` and logged every
  `stats_interval_s`.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import queue
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson

from agents.config import AgentConfig
from agents.filters import RuleFilter, follow_rules
from agents.heartbeat import report_pack_versions
from agents.replay import timestamp_ms, traceparent
from agents.scenarios.ids import stamper
from agents.sensors import Sensor, SensorUnavailable, create
from agents.spool import Chunk, Spool
from sentinel.contracts import errors as contract_errors
from sentinel.contracts import validator
from sentinel.logs import get_logger
from sentinel.settings import Settings
from sentinel.tracing import SpanKind, flush, traceparent_of, tracer

log = get_logger(__name__)

# One chunk is one record batch: it must stay under the broker's message.max.bytes (1 MiB).
_MAX_CHUNK_BYTES = 448 * 1024  # + one event (<= 256 KiB) + ~100 bytes per record
_MAX_BATCH_BYTES = 1000 * 1024
_LINGER_S = 0.05
_WRITER_LINGER_S = 0.01

COUNTERS = (
    "accepted",
    "spooled",
    "produced",
    "dropped_queue_full",
    "sampled",
    "filtered",
    "invalid",
    "resent",
    "send_errors",
)


def tune_gc() -> None:
    """Garbage-collector settings for a process that turns thousands of records a second into dicts.

    Every event allocates a few containers, so the default generation-0 threshold (700) runs a
    collection every couple of hundred events; start-up objects (modules, BPF programs, caches)
    are frozen out of the collector's scans. Measured on bcc-exec's record handling: about a
    quarter less CPU per record (docs/PERFORMANCE.md). Reference cycles are still collected.
    Process-wide, so the agent's entry points call it (`sentinel agent run`), not the class.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class AgentError(RuntimeError):
    """The agent cannot run as configured; the message says why."""


class Agent:
    """One agent process: owns its sensors, queue, spool, shipper and rule follower."""

    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        *,
        sensors: Iterable[Sensor] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.host = config.host_identity()
        self.key = self.host["id"].encode()
        self.dir = config.agent_dir(settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        # One agent per host id and state folder: two would share (and corrupt) one spool.
        self._lock_file = (self.dir / "agent.lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise AgentError(
                f"another agent for host {self.host['id']} is running (it holds "
                f"{self.dir / 'agent.lock'}); give this one another host.id or state folder"
            ) from None
        self.spool = Spool(
            config.spool_dir(settings),
            segment_bytes=int(config.spool.segment_mb * 1024 * 1024),
            max_bytes=int(config.spool.max_mb * 1024 * 1024),
            fsync=config.spool.fsync,
            fsync_interval_s=config.spool.fsync_interval_s,
        )
        self.queue: queue.Queue[bytes] = queue.Queue(maxsize=config.queue_size)
        self.rule_filter = RuleFilter()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.unavailable: dict[str, str] = {}  # sensor -> why it could not start
        self._given = list(sensors) if sensors is not None else None
        self.sensors: list[Sensor] = []
        self._threads: list[threading.Thread] = []
        self._stop_sensors = threading.Event()
        self._stop_writer = threading.Event()
        self._stop_shipper = threading.Event()
        self._stop_rules = threading.Event()
        self._offer_lock = threading.Lock()
        self._seq = 0
        self._random = random.Random()
        self._stamp = stamper(random.Random(os.urandom(16)))
        self._valid = validator("event").is_valid
        self._policies = {
            kind: config.policy(kind) for kind in ("proc", "file", "net", "dns", "auth")
        }
        self._rejected_path = self.dir / "rejected.jsonl"
        self.tracer = tracer(settings, "sentinel-agent")  # one `agent.ship` span per chunk
        self._metrics_server: Any = None
        self.started_at = time.time()
        self.connected = False

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        """Start every sensor that can run here, then the writer, shipper and rule follower."""
        for sensor in self._given if self._given is not None else self._configured():
            try:
                sensor.start()
            except (SensorUnavailable, OSError) as exc:
                self.unavailable[sensor.name] = str(exc)
                log.error("sensor unavailable", sensor=sensor.name, reason=str(exc))
                continue
            self.sensors.append(sensor)
            self._spawn(f"sensor-{sensor.name}", self._run_sensor, sensor)
        if not self.sensors:
            self.spool.close()
            self._lock_file.close()
            reasons = "; ".join(f"{k}: {v}" for k, v in self.unavailable.items()) or "none set"
            raise SensorUnavailable(f"no sensor can run on this host ({reasons})")
        self._spawn("spool-writer", self._write_loop)
        self._spawn("shipper", self._ship_loop)
        self._serve_metrics()
        if self.config.rules.follow:
            self._spawn(
                "rules",
                follow_rules,
                self.settings.kafka_bootstrap,
                self.config.rules.topic,
                self.rule_filter,
                self._stop_rules,
                client_id=f"{self.settings.kafka_client_id}-agent-rules",
                settings=self.settings,
            )
            self._spawn(
                "heartbeat",
                report_pack_versions,
                self.settings,
                self.host["id"],
                self.rule_filter,
                self._stop_rules,
            )
        log.info(
            "agent started",
            host=self.host["id"],
            sensors=[s.name for s in self.sensors],
            unavailable=sorted(self.unavailable),
            spool=str(self.spool.directory),
            spool_pending=self.spool.pending,
        )

    def _configured(self) -> list[Sensor]:
        found = []
        for name, options in self.config.sensors.items():
            options = dict(options or {})
            if options.pop("enabled", True) is False:
                continue
            try:
                found.append(create(name, options))
            except (KeyError, ImportError) as exc:
                self.unavailable[name] = str(exc)
                log.error("sensor unavailable", sensor=name, reason=str(exc))
        return found

    def _spawn(self, name: str, target: Any, *args: Any, **kwargs: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, kwargs=kwargs, name=f"agent-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Clean shutdown: stop sensors, spool what is queued, ship what the timeout allows."""
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        self._stop_sensors.set()
        for sensor in self.sensors:
            sensor.stop()
        self._join("agent-sensor-", 5.0)
        self._stop_writer.set()
        self._join("agent-spool-writer", 10.0)
        deadline = time.monotonic() + timeout
        while self.spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop_shipper.set()
        self._stop_rules.set()
        self._join("agent-", 15.0)
        self.spool.close()
        stats = self.stats()
        self._write_stats(stats)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        flush()
        self._lock_file.close()  # releases the lock
        log.info("agent stopped", **_flat(stats))
        return stats

    def _join(self, prefix: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.name.startswith(prefix):
                thread.join(max(0.0, deadline - time.monotonic()))

    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """start(), then report stats until `duration_s` passes or the process is interrupted."""
        self.start()
        until = None if duration_s is None else time.monotonic() + duration_s
        try:
            while until is None or time.monotonic() < until:
                wait = self.config.stats_interval_s
                if until is not None:
                    wait = min(wait, max(0.0, until - time.monotonic()))
                if self._stop_sensors.wait(wait):
                    break
                stats = self.stats()
                self._write_stats(stats)
                log.info("agent stats", **_flat(stats))
        except KeyboardInterrupt:
            pass
        return self.stop()

    def request_stop(self) -> None:
        """Ask `run` to return (from a signal handler)."""
        self._stop_sensors.set()

    # -- the sensor side --------------------------------------------------------------------
    def _run_sensor(self, sensor: Sensor) -> None:
        try:
            for event in sensor.events():
                self.offer(sensor, event)
                if self._stop_sensors.is_set():
                    break
        except Exception as exc:  # a sensor bug must not take the agent down
            log.exception("sensor failed", sensor=sensor.name, error=repr(exc))
            self.unavailable[sensor.name] = f"failed: {exc!r}"

    def offer(self, sensor: Sensor, partial: dict[str, Any]) -> bool:
        """Stamp, filter, validate and queue one event from `sensor`; True when queued.

        Sensors call this from their own threads: one lock orders sequence numbers with queue
        positions and keeps the counters exact.
        """
        kind = str(partial.get("kind", ""))
        with self._offer_lock:
            rate = self.rule_filter.rate(kind)
            if rate <= 0.0:
                self.counters["filtered"] += 1
                return False
            policy = self._policies.get(kind) or self.config.policy(kind)
            rate *= policy.sample
            if rate < 1.0 and self._random.random() >= rate:
                self.counters["sampled"] += 1
                return False
            event_id, now_ts = self._stamp(time.time_ns() // 1000)
            self._seq += 1
            event = {
                "schema": "sentinel.event/1",
                "id": event_id,
                "ts": partial.get("ts") or now_ts,
                "host": self.host,
                "sensor": {"name": sensor.name, "version": sensor.version, "seq": self._seq},
                **{k: v for k, v in partial.items() if k != "ts"},
            }
            payload = orjson.dumps(event)
            if len(payload) > self.config.max_event_bytes or not self._valid(event):
                self._reject(event, payload)
                return False
            if policy.on_full == "drop":
                try:
                    self.queue.put_nowait(payload)
                except queue.Full:
                    self.counters["dropped_queue_full"] += 1
                    return False
            else:
                while True:  # backpressure: the sensor waits, nothing is dropped
                    try:
                        self.queue.put(payload, timeout=0.5)
                        break
                    except queue.Full:
                        if self._stop_writer.is_set():
                            self.counters["dropped_queue_full"] += 1
                            return False
            self.counters["accepted"] += 1
        return True

    def _reject(self, event: dict[str, Any], payload: bytes) -> None:
        self.counters["invalid"] += 1
        if len(payload) > self.config.max_event_bytes:
            reason = f"event of {len(payload)} bytes exceeds {self.config.max_event_bytes}"
        else:
            reason = "; ".join(
                f"{path or '(event)'}: {why}" for path, why in contract_errors("event", event)
            )
        log.warning("event rejected", sensor=event["sensor"]["name"], reason=reason)
        with self._rejected_path.open("ab") as fh:
            fh.write(orjson.dumps({"reason": reason, "event": event}) + b"\n")

    # -- the writer: queue -> spool ---------------------------------------------------------
    def _write_loop(self) -> None:
        batch_size = self.config.batch_size
        while True:
            batch: list[bytes] = []
            try:
                batch.append(self.queue.get(timeout=0.1))
                if self.queue.qsize() < batch_size:
                    time.sleep(_WRITER_LINGER_S)  # one append per burst, not per event
                while len(batch) < batch_size:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            if batch:
                self.spool.append(batch)
                self.counters["spooled"] += len(batch)
            else:
                self.spool.tick()
                if self._stop_writer.is_set() and self.queue.empty():
                    self.spool.sync()
                    return

    # -- the shipper: spool -> Kafka --------------------------------------------------------
    def _producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.kafka_client_id}-agent-{self.host['id']}",
            acks="all",
            # Idempotent: a batch is retried with the same sequence numbers until the broker
            # takes it, however long it is away, and the broker writes each record once.
            enable_idempotence=True,
            linger_ms=0,  # the shipper batches itself (`_LINGER_S`)
            max_batch_size=_MAX_BATCH_BYTES,
            max_request_size=_MAX_BATCH_BYTES,
            request_timeout_ms=10_000,
            retry_backoff_ms=200,
        )

    def _ship_loop(self) -> None:
        asyncio.run(self._ship_async())

    async def _ship_async(self) -> None:
        """Spool -> Kafka, one chunk in flight: read, send as one batch, await the ack, commit."""
        from aiokafka.errors import KafkaError
        from aiokafka.partitioner import DefaultPartitioner

        producer = None
        partition = -1
        backoff = 0.5
        while not self._stop_shipper.is_set():
            if producer is None:
                candidate = self._producer()
                try:
                    await candidate.start()
                    partitions = sorted(await candidate.partitions_for(self.config.topic))
                    # The Java client's murmur2 partitioner: one partition per host id.
                    partition = DefaultPartitioner()(self.key, partitions, partitions)
                    producer, self.connected, backoff = candidate, True, 0.5
                except KafkaError as exc:
                    self.connected = False
                    await candidate.stop()
                    log.warning("broker unreachable; events stay in the spool", error=repr(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            pending = self.spool.pending
            if not pending:
                await asyncio.sleep(0.01)
                continue
            if pending < self.config.batch_size:
                await asyncio.sleep(_LINGER_S)  # let a chunk gather: per-chunk cost dominates
            chunk = self.spool.read(max_records=self.config.batch_size, max_bytes=_MAX_CHUNK_BYTES)
            if chunk is None or not chunk.records:
                await asyncio.sleep(0.01)
                continue
            outcome = await self._ship(producer, partition, chunk)
            if outcome == "ok":
                self.spool.commit(chunk)
                self.counters["produced"] += len(chunk.records)
                self.connected = True
            elif outcome == "stopped":
                self.spool.rewind()  # stays in the spool for the next start
                break
            else:  # a failed chunk: a new producer sends it again from the cursor
                self.counters["send_errors"] += 1
                self.counters["resent"] += len(chunk.records)
                self.connected = False
                self.spool.rewind()
                log.warning("delivery failed; resending from the spool", error=outcome)
                await producer.stop()
                producer = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if producer is not None:
            await producer.stop()

    async def _ship(self, producer: Any, partition: int, chunk: Chunk) -> str:
        """Send a chunk as one batch and wait for its ack: "ok", "stopped" or the error.

        The chunk is one `agent.ship` span; its context is the `traceparent` of every record.
        """
        with self.tracer.start_as_current_span(
            "agent.ship",
            kind=SpanKind.PRODUCER,
            attributes={
                "host.id": self.host["id"],
                "messaging.destination.name": self.config.topic,
                "messaging.destination.partition.id": partition,
                "messaging.batch.message_count": len(chunk.records),
            },
        ) as span:
            outcome = await self._send_chunk(producer, partition, chunk, traceparent_of(span))
            span.set_attribute(
                "agent.outcome", outcome if outcome in ("ok", "stopped") else "error"
            )
            return outcome

    async def _send_chunk(
        self, producer: Any, partition: int, chunk: Chunk, header: str | None
    ) -> str:
        from aiokafka.errors import KafkaError

        batch = producer.create_batch()
        shared = [("traceparent", header.encode())] if header else None
        for payload in chunk.records:
            appended = batch.append(
                key=self.key,
                value=payload,
                timestamp=_event_ms(payload),
                headers=shared or [("traceparent", traceparent())],  # tracing off: per event
            )
            if appended is None:  # cannot happen below _MAX_CHUNK_BYTES; never drop silently
                return f"a chunk of {chunk.bytes} bytes did not fit one batch"
        try:
            delivered = await producer.send_batch(batch, self.config.topic, partition=partition)
            while True:
                done, _ = await asyncio.wait([delivered], timeout=0.5)
                if done:
                    delivered.result()
                    return "ok"
                self.connected = False
                if self._stop_shipper.is_set():
                    return "stopped"
        except KafkaError as exc:
            return repr(exc)

    # -- state ------------------------------------------------------------------------------
    def _serve_metrics(self) -> None:
        """Prometheus /metrics on `metrics_port` (agent.yaml), read from `stats()` per scrape."""
        if self.config.metrics_port is None:
            return
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        from sentinel.metrics import Snapshot

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(Snapshot(lambda: _metric_families(self.stats())))
        self._metrics_server, _ = start_http_server(
            self.config.metrics_port, self.config.metrics_host, registry=registry
        )
        log.info("metrics served", port=self._metrics_server.server_port)

    def stats(self) -> dict[str, Any]:
        spool = self.spool.stats()
        return {
            "host": self.host["id"],
            "uptime_s": round(time.time() - self.started_at, 1),
            "connected": self.connected,
            **self.counters,
            "dropped": self.counters["dropped_queue_full"] + spool["dropped"],
            "queue": self.queue.qsize(),
            "spool": spool,
            "sensors": {s.name: dict(s.counters) for s in self.sensors},
            "unavailable": dict(self.unavailable),
            "rule_packs": dict(self.rule_filter.versions),
            "kind_rates": dict(self.rule_filter.rates),
        }

    def _write_stats(self, stats: dict[str, Any]) -> None:
        path = self.dir / "stats.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    keep = ("produced", "spooled", "dropped", "sampled", "filtered", "invalid", "resent", "queue")
    flat = {k: stats[k] for k in keep}
    flat["spool_pending"] = stats["spool"]["pending"]
    flat["connected"] = stats["connected"]
    return flat


def _metric_families(stats: dict[str, Any]) -> list[Any]:
    """The agent's counters (`stats()`) as Prometheus families, `sentinel_agent_*`."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def counter(name: str, doc: str, value: float) -> Any:
        return CounterMetricFamily(f"sentinel_agent_{name}", doc, value=value)

    def gauge(name: str, doc: str, value: float) -> Any:
        return GaugeMetricFamily(f"sentinel_agent_{name}", doc, value=value)

    spool = stats["spool"]
    families = [
        counter(
            "events_accepted", "events queued after sampling, filters and checks", stats["accepted"]
        ),
        counter("events_produced", "events acknowledged by Kafka", stats["produced"]),
        counter("events_dropped", "events lost: queue full or spool cap", stats["dropped"]),
        counter(
            "events_rejected",
            "events failing the contract or size (rejected.jsonl)",
            stats["invalid"],
        ),
        counter("events_sampled", "events left out by sampling", stats["sampled"]),
        counter(
            "events_filtered", "events left out by the rule packs' agent filters", stats["filtered"]
        ),
        counter("events_resent", "events sent again after a failed delivery", stats["resent"]),
        counter("send_errors", "chunks whose delivery failed", stats["send_errors"]),
        gauge("queue_depth", "events in the in-memory queue", stats["queue"]),
        gauge(
            "spool_pending_records", "records in the spool not yet acknowledged", spool["pending"]
        ),
        gauge("spool_bytes", "bytes of the spool's segments on disk", spool["bytes"]),
        counter(
            "spool_corrupt_records", "spool records lost to a checksum mismatch", spool["corrupt"]
        ),
        gauge(
            "connected", "1 while the broker takes the agent's chunks", float(stats["connected"])
        ),
        gauge("uptime_seconds", "seconds since the agent started", stats["uptime_s"]),
    ]
    per_sensor = CounterMetricFamily(
        "sentinel_agent_sensor_events", "per-sensor counters", labels=["sensor", "counter"]
    )
    for sensor, counters in sorted(stats["sensors"].items()):
        for name, value in sorted(counters.items()):
            per_sensor.add_metric([sensor, name], value)
    unavailable = GaugeMetricFamily(
        "sentinel_agent_sensor_unavailable",
        "1 for a sensor that could not start",
        labels=["sensor"],
    )
    for sensor in sorted(stats["unavailable"]):
        unavailable.add_metric([sensor], 1.0)
    return [*families, per_sensor, unavailable]


def _event_ms(payload: bytes) -> int | None:
    """The event time of an encoded event, in epoch ms (the Kafka record timestamp)."""
    marker = payload.find(b'"ts":"')
    if marker < 0:
        return None
    end = payload.find(b'"', marker + 6)
    return timestamp_ms({"ts": payload[marker + 6 : end].decode()})
