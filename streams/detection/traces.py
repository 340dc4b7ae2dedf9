"""Spans of the detection service: one `detect.batch` per batch, one `detect.alert` per published
alert, never one per event.

A batch has many parents (the producers' spans of its records), so `detect.batch` starts a trace
of its own and links to them. Each alert continues the trace of its source event (the record's
`traceparent`), links to the batch, and its own context goes on the alert record's `traceparent`
header, which triage continues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from sentinel.kafka import EVENTS
from sentinel.tracing import Link, SpanKind, context_of, links_to, traceparent_of
from streams.detection.pipeline import Outcome


def traceparent_header(record: ConsumerRecord | None) -> bytes | None:
    for name, value in (record.headers or ()) if record is not None else ():
        if name == "traceparent":
            return bytes(value)
    return None


def batch_span(
    tracer: Tracer,
    fetched: Mapping[TopicPartition, Sequence[ConsumerRecord]],
    started_ns: int,
    size: int,
) -> Span:
    """`detect.batch`, linked to the producer span of each partition's first record."""
    links = links_to([traceparent_header(records[0]) for records in fetched.values() if records])
    return tracer.start_span(
        "detect.batch",
        kind=SpanKind.CONSUMER,
        links=links,
        start_time=started_ns,
        attributes={
            "messaging.destination.name": EVENTS,
            "messaging.batch.message_count": size,
            "detection.partitions": sorted({tp.partition for tp in fetched}),
        },
    )


def alert_spans(
    tracer: Tracer,
    batch: Span,
    records: Sequence[ConsumerRecord],
    outcome: Outcome,
    started_ns: int,
) -> list[tuple[Span, list[tuple[str, bytes]]]]:
    """A `detect.alert` span per alert of `outcome`, each with the headers its record carries.

    `records` are the batch's records in the order they were validated: the i-th valid event is
    the i-th record that is no dead letter, so its record is found a few steps from `records[i]`.
    """
    if not outcome.alerts or not batch.get_span_context().is_valid:
        return []
    raw = outcome.raw
    batch_link = [Link(batch.get_span_context())]
    found: list[tuple[Span, list[tuple[str, bytes]]]] = []
    for alert in outcome.alerts:
        index = outcome.sources.get(alert["id"])  # None: republished, no match in this batch
        source = _record_of(records, raw, index) if index is not None else None
        parent = context_of(traceparent_header(source))
        attributes = {
            "alert.id": alert["id"],
            "rule.id": str(alert["rule"]["id"]),
            "severity": str(alert["severity"]),
            "host.id": str(alert["host"]["id"]),
            "alert.count": int(alert.get("count", 1)),
        }
        if index is not None and index < len(outcome.events):
            attributes["event.id"] = str(outcome.events[index].get("id"))
        span = tracer.start_span(
            "detect.alert",
            context=parent or trace.set_span_in_context(batch),
            kind=SpanKind.PRODUCER,
            links=batch_link,
            start_time=started_ns,
            attributes=attributes,
        )
        header = traceparent_of(span)
        found.append((span, [("traceparent", header.encode())] if header else []))
    return found


def _record_of(
    records: Sequence[ConsumerRecord], raw: Sequence[bytes], index: int
) -> ConsumerRecord | None:
    if index >= len(raw):
        return None
    value = raw[index]
    for j in range(index, len(records)):  # skips the dead letters before it
        if records[j].value is value:
            return records[j]
    return None
