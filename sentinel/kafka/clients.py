"""Kafka client factories (kafka-python) built from the settings, so every process connects alike."""

from __future__ import annotations

from typing import Any

from sentinel.settings import Settings


def admin_client(settings: Settings, **overrides: Any) -> Any:
    from kafka import KafkaAdminClient

    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.kafka_client_id}-admin",
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return KafkaAdminClient(**options)


def producer(settings: Settings, **overrides: Any) -> Any:
    """A producer tuned for throughput with no loss: acks=all, idempotent, batched."""
    from kafka import KafkaProducer

    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.kafka_client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> Any:
    """A consumer with manual commits: callers commit after their side effects are durable."""
    from kafka import KafkaConsumer

    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.kafka_client_id}-consumer",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 5000,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(overrides)
    return KafkaConsumer(*topics, **options)


def async_producer(settings: Settings, **overrides: Any) -> Any:
    """An aiokafka producer (the client Faust uses); its batch API is the fast path for bulk sends."""
    from aiokafka import AIOKafkaProducer

    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"{settings.kafka_client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 60_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)
