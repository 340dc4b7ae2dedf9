"""Validate and detect over one batch of raw records: pure Python over the engine, no Kafka here."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import orjson

from sentinel.logs import get_logger
from streams.detection.alerts import Suppressor, build_alert
from streams.detection.ruleset import RuleSet
from streams.validation import DeadLetter, validate_record

log = get_logger(__name__)


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass
class Outcome:
    events: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rule_failures: int = 0


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

    def validate(self, records: list[RawRecord]) -> Outcome:
        outcome = Outcome()
        for r in records:
            checked = validate_record(
                r.key,
                r.value,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                max_bytes=self.max_event_bytes,
            )
            if isinstance(checked, DeadLetter):
                outcome.dead.append(checked)
            else:
                outcome.events.append(checked)
        return outcome

    def detect(self, outcome: Outcome, *, publish: bool = True) -> Outcome:
        """Run the rules over `outcome.events`; fill `outcome.alerts` (nothing when not publishing)."""
        events = outcome.events
        if not events:
            return outcome
        result = self.ruleset.engine.evaluate_jsonl(b"\n".join(orjson.dumps(e) for e in events))
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
            self.suppressor.add(
                build_alert(
                    match.alert,
                    events[match.event_index],
                    pack,
                    rule,
                    engine_version=self.ruleset.engine_version,
                    enrichment_snapshot=self.enrichment_snapshot,
                )
            )
        drained = self.suppressor.drain()
        if publish:
            outcome.alerts = drained
        return outcome
