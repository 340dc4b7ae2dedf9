"""Session fixtures: one real Kafka broker for the whole run (or the cluster the settings name)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from sentinel.kafka import EmbeddedBroker, TopicSpec, create_topics, ensure_contract_topics
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> Iterator[Settings]:
    """A broker that answers metadata, with the contract topics; stopped at the end if we started it."""
    broker = EmbeddedBroker(settings, say=lambda line: print(f"[kafka] {line}"))
    started_here = settings.kafka_embedded and broker.pid() is None
    broker.start()
    ensure_contract_topics(settings)
    yield settings
    if started_here:
        broker.stop()


@pytest.fixture
def new_topic(kafka: Settings) -> Callable[..., str]:
    """Create a topic no other test uses: `new_topic(partitions=3)` returns its name."""

    def create(partitions: int = 3, prefix: str = "test") -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        admin = admin_client(kafka)
        try:
            create_topics(admin, [TopicSpec(name, partitions)])
        finally:
            admin.close()
        return name

    return create
