"""Check one raw Kafka record against the event contract; whatever the bytes, never raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sentinel.contracts import ContractError, validate


@dataclass(frozen=True)
class DeadLetter:
    """A record that failed a stage: the original bytes, untouched, and why (for the DLQ headers)."""

    key: bytes | None
    value: bytes
    error: str
    stage: str
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("error", self.error.encode()[:4096]),
            ("stage", self.stage.encode()),
            ("source-topic", self.topic.encode()),
            ("source-partition", str(self.partition).encode()),
            ("source-offset", str(self.offset).encode()),
        ]


def validate_record(
    key: bytes | None,
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int,
) -> dict[str, Any] | DeadLetter:
    """The parsed event, or a DeadLetter saying what was wrong with it."""

    def dead(error: str) -> DeadLetter:
        return DeadLetter(key, value or b"", error, "validate", topic, partition, offset)

    if value is None:
        return dead("empty record (no value)")
    if len(value) > max_bytes:
        return dead(f"record of {len(value)} bytes exceeds the {max_bytes}-byte limit")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return dead(f"not JSON: {exc}")
    if not isinstance(event, dict):
        return dead(f"not a JSON object but a {type(event).__name__}")
    try:
        validate("event", event)
    except ContractError as exc:
        return dead(str(exc))
    return event
