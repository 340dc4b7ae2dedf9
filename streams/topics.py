"""The Faust topic objects, declared once (names come from sentinel.kafka.topics)."""

from __future__ import annotations

from typing import Any

import faust

from sentinel.kafka import topics as names


def declare(app: faust.App) -> dict[str, Any]:
    """Raw-bytes topics: the stream validates and encodes itself, and DLQ bytes stay untouched."""
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    return {
        "events": app.topic(names.EVENTS, **raw),
        "dlq": app.topic(names.EVENTS_DLQ, **raw),
        "alerts": app.topic(names.ALERTS, **raw),
        "triaged": app.topic(names.ALERTS_TRIAGED, **raw),
        "rules": app.topic(names.RULES, **raw),
        "heartbeats": app.topic(names.HEARTBEATS, **raw),
    }
