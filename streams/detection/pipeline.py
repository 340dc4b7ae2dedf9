"""Validate and detect over one batch of raw records: pure Python over the engine, no Kafka here."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson
from sentinel_rhai import BatchResult

from sentinel.contracts import validator as contract_validator
from sentinel.logs import get_logger
from streams.detection.alerts import Suppressor, build_alert
from streams.detection.ruleset import RuleSet
from streams.validation import DeadLetter, validate_record

log = get_logger(__name__)


class Record(Protocol):
    """What the detector needs of a Kafka record (aiokafka's `ConsumerRecord` has it)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class RawRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass
class Outcome:
    events: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # each valid event's original bytes
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rule_failures: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # alert id -> its newest match's event


class Detector:
    """Turns batches of records into valid events, dead letters and alerts."""

    def __init__(
        self, ruleset: RuleSet, *, max_event_bytes: int, suppress_max: int = 100_000
    ) -> None:
        self.ruleset = ruleset
        self.max_event_bytes = max_event_bytes
        self.suppressor = Suppressor(suppress_max)
        self.enrichment_snapshot = ""
        self.failures_by_rule: collections.Counter[str] = collections.Counter()

    def validate(self, records: Sequence[Record]) -> Outcome:
        outcome = Outcome()
        events, raw, dead = outcome.events, outcome.raw, outcome.dead
        loads, is_valid, max_bytes = (
            orjson.loads,
            contract_validator("event").is_valid,
            self.max_event_bytes,
        )
        for r in records:
            value = r.value
            # The fast path for the valid events that nearly all are; anything else takes the
            # full check, which says why the record is a dead letter.
            if value is not None and len(value) <= max_bytes:
                try:
                    event = loads(value)
                except orjson.JSONDecodeError:
                    event = None
                if type(event) is dict and is_valid(event):
                    events.append(event)
                    raw.append(value)
                    continue
            checked = validate_record(
                r.key,
                r.value,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                max_bytes=self.max_event_bytes,
            )
            if isinstance(checked, DeadLetter):
                dead.append(checked)
            else:
                events.append(checked)
                raw.append(r.value)  # type: ignore[arg-type]  # a valid event has a value
        return outcome

    def detect(self, outcome: Outcome, *, publish: bool = True) -> Outcome:
        """Run the rules over `outcome.events`; fill `outcome.alerts` (nothing when not publishing)."""
        if not outcome.events:
            return outcome
        result = self.ruleset.engine.evaluate_jsonl(engine_payload(outcome.events, outcome.raw))
        return self.collect(outcome, result, publish=publish)

    def collect(self, outcome: Outcome, result: BatchResult, *, publish: bool = True) -> Outcome:
        """Turn the engine's `result` for `outcome.events` into alerts (suppressed) and counts.

        Split from `detect` so that the engine call can run on another thread (it releases the
        GIL) while the next batch is validated; batches must be collected in evaluation order.
        """
        events = outcome.events
        for failure in result.failures:
            outcome.rule_failures += 1
            self.failures_by_rule[failure.rule_id] += 1
            if publish:
                log.warning(
                    "rule failed",
                    rule=failure.rule_id,
                    kind=failure.kind,
                    event_id=events[failure.event_index].get("id"),
                    message=failure.message,
                    line=failure.line,
                    column=failure.column,
                )
        rules = self.ruleset.rules
        for match in result.matches:
            found = rules.get(match.rule_id)
            if found is None:  # swapped out between evaluation and here: nothing to attribute
                continue
            pack, rule = found
            alert = build_alert(
                match.alert,
                events[match.event_index],
                pack,
                rule,
                engine_version=self.ruleset.engine_version,
                enrichment_snapshot=self.enrichment_snapshot,
            )
            outcome.sources[alert["id"]] = match.event_index  # for the alert's trace
            self.suppressor.add(alert)
        drained = self.suppressor.drain()
        if publish:
            outcome.alerts = drained
        return outcome


def engine_payload(events: list[dict[str, Any]], raw: list[bytes]) -> bytes:
    """The JSON Lines the engine evaluates: each event as the rules should see it.

    Re-encoding every event costs more than the rules do, so an event's original bytes are used
    as they are, and the `enrichment` object the enrich stage added is spliced in before the
    closing brace (encoded once per distinct annotation: a batch has few hosts and addresses).
    An event that arrived with its own `enrichment`, or whose bytes span lines, is re-encoded.
    """
    if len(raw) != len(events):  # events built in-process (tests, warm-up of dicts)
        return b"\n".join(orjson.dumps(e) for e in events)
    encoded: dict[int, bytes] = {}  # annotation -> `,"enrichment":{...}}\n`
    pieces: list[bytes | memoryview] = []
    add = pieces.append
    for event, original in zip(events, raw, strict=True):
        annotation = event.get("enrichment")
        if b"\n" in original or (annotation is not None and b'"enrichment"' in original):
            add(orjson.dumps(event) + b"\n")
        elif annotation is None:
            add(original)
            add(b"\n")
        else:
            tail = encoded.get(id(annotation))
            if tail is None:
                tail = encoded[id(annotation)] = (
                    b',"enrichment":' + orjson.dumps(annotation) + b"}\n"
                )
            if original[-1:] != b"}":
                original = original.rstrip()
            add(memoryview(original)[:-1])  # without its closing brace, not copied
            add(tail)
    return b"".join(pieces)[:-1]
