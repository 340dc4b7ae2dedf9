"""Kafka helpers: the embedded broker, the contract topics and client factories."""

from sentinel.kafka import offsets
from sentinel.kafka.broker import (
    BrokerError,
    BrokerStatus,
    EmbeddedBroker,
    answers_metadata,
    free_port,
)
from sentinel.kafka.topics import (
    ALERTS,
    ALERTS_TRIAGED,
    EVENTS,
    EVENTS_DLQ,
    HEARTBEATS,
    RULES,
    TopicSpec,
    contract_topics,
    create_topics,
    describe_topics,
    ensure_contract_topics,
)

__all__ = [
    "ALERTS",
    "ALERTS_TRIAGED",
    "EVENTS",
    "EVENTS_DLQ",
    "HEARTBEATS",
    "RULES",
    "BrokerError",
    "BrokerStatus",
    "EmbeddedBroker",
    "TopicSpec",
    "answers_metadata",
    "contract_topics",
    "create_topics",
    "describe_topics",
    "ensure_contract_topics",
    "free_port",
    "offsets",
]
