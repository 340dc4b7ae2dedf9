"""Session fixtures: one real Kafka broker for the whole run (or the cluster the settings name)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
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


@pytest.fixture(scope="session")
def ml_state(tmp_path_factory: pytest.TempPathFactory, kafka: Settings) -> Iterator[Any]:
    """A trained lake: lake_hourly and models_daily run once (see tests/mlstate.py)."""
    from tests.mlstate import build_ml_state

    tmp = tmp_path_factory.mktemp("ml")
    (tmp / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
        yield build_ml_state(tmp, kafka, instance)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the session: its base URL (see tests/pgserver.py)."""
    from tests.pgserver import postgres_server

    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def postgres_db(postgres: str) -> str:
    """A database of its own on the session's PostgreSQL server: `postgresql://.../<name>`."""
    from tests.pgserver import new_database

    return new_database(postgres)
