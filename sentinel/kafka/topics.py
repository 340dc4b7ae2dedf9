"""The Kafka topics of the contract, declared once, and their idempotent creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentinel.settings import Settings

EVENTS = "sentinel.events.v1"
EVENTS_DLQ = "sentinel.events.dlq.v1"
ALERTS = "sentinel.alerts.v1"
ALERTS_TRIAGED = "sentinel.alerts.triaged.v1"
RULES = "sentinel.rules.v1"
HEARTBEATS = "sentinel.heartbeats.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    key: str = ""
    value: str = ""


def contract_topics(settings: Settings) -> list[TopicSpec]:
    """The topics of ARCHITECTURE.md's contract table, sized by the settings."""
    n = settings.kafka_partitions
    week = str(7 * 24 * 3600 * 1000)
    return [
        # Record time = event time, stamped by the host: a host whose clock runs up to a week
        # ahead still delivers (Kafka 4 refuses more than 1 h ahead by default).
        TopicSpec(
            EVENTS,
            n,
            {"retention.ms": week, "message.timestamp.after.max.ms": week},
            "host id",
            "event",
        ),
        TopicSpec(
            EVENTS_DLQ,
            n,
            {"retention.ms": str(30 * 24 * 3600 * 1000)},
            "original key",
            "original bytes",
        ),
        TopicSpec(ALERTS, n, {"retention.ms": week}, "alert id", "alert"),
        TopicSpec(ALERTS_TRIAGED, n, {"retention.ms": week}, "alert id", "triage"),
        # Compacted: the latest signed pack per name is the state workers and agents reload.
        TopicSpec(
            RULES,
            1,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            "pack name",
            "rule pack",
        ),
        # Compacted: the latest report per worker or agent is what the policy service tracks.
        TopicSpec(
            HEARTBEATS,
            1,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            "instance",
            "heartbeat",
        ),
    ]


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    config: dict[str, str]


def create_topics(admin: object, specs: list[TopicSpec]) -> tuple[list[str], list[str]]:
    """Create missing topics; return (created, already_present). Existing ones are left as they are."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    assert isinstance(admin, KafkaAdminClient)
    existing = set(admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    for spec in missing:
        try:
            admin.create_topics(
                [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config)],
                validate_only=False,
            )
            created.append(spec.name)
        except TopicAlreadyExistsError:  # another process won the race: that is fine
            pass
    present = [s.name for s in specs if s.name not in created]
    return created, present


def ensure_contract_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """Create the contract topics that are missing; (created, already present)."""
    from sentinel.kafka.clients import admin_client

    admin = admin_client(settings)
    try:
        return create_topics(admin, contract_topics(settings))
    finally:
        admin.close()


def describe_topics(admin: object, names: list[str]) -> list[TopicState]:
    """Partitions and topic-level (non-default) configs of the named topics that exist."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    assert isinstance(admin, KafkaAdminClient)
    present = set(admin.list_topics())
    names = [n for n in names if n in present]
    if not names:
        return []
    described = {t["name"]: t for t in admin.describe_topics(names)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    # kafka-python 3: {"topic": {name: {key: {"value": ..., "config_source": ...}}}}
    configs = admin.describe_configs(resources).get("topic", {})
    return [
        TopicState(
            n,
            len(described[n]["partitions"]),
            {
                key: entry["value"]
                for key, entry in configs.get(n, {}).items()
                if entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG"
            },
        )
        for n in names
    ]


def message_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Messages currently held per topic (end minus beginning offsets, summed over partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        counts: dict[str, int] = {}
        for name in names:
            partitions = consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in partitions]
            if not tps:
                continue
            end = consumer.end_offsets(tps)
            begin = consumer.beginning_offsets(tps)
            counts[name] = sum(end[tp] - begin[tp] for tp in tps)
        return counts
    finally:
        consumer.close()
