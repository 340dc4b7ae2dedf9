"""The service's state: database, signing key, Kafka producer and the ingest path."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sentinel.contracts import errors as contract_errors
from sentinel.contracts import validator
from sentinel.logs import get_logger
from sentinel.rules.signing import keygen, load_private_key
from sentinel.settings import Settings
from services.policy import audit
from services.policy.auth import hash_key
from services.policy.db import User, make_engine, migrate

log = get_logger(__name__)


class KafkaUnavailable(Exception):
    """The broker did not take a record; the API answers 503 with this reason."""


def signing_key(settings: Settings) -> tuple[Ed25519PrivateKey, str, Path]:
    """The configured key, or the one under <state_dir>/policy/keys (created on first start)."""
    if settings.policy_signing_key is not None:
        key, key_id = load_private_key(settings.policy_signing_key)
        return key, key_id, settings.policy_signing_key
    directory = settings.policy_root / "keys"
    existing = sorted(directory.glob("*.key")) if directory.is_dir() else []
    if not existing:
        key_id = keygen(directory)
        log.warning(
            "created a signing key; trust its public key in workers and agents",
            key_id=key_id,
            public_key=str(directory / f"{key_id}.pub"),
        )
        existing = [directory / f"{key_id}.key"]
    key, key_id = load_private_key(existing[0])
    return key, key_id, existing[0]


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


class Policy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_url = settings.policy_database_url
        migrate(self.db_url)
        self.engine = make_engine(self.db_url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.key, self.key_id, self.key_path = signing_key(settings)
        self._producer: Any = None
        self._producer_lock = threading.Lock()
        self._event_valid = validator("event").is_valid
        if settings.policy_bootstrap_admin_key:
            self.bootstrap_admin(settings.policy_bootstrap_admin_key)

    def session(self) -> Session:
        return self.sessions()

    def bootstrap_admin(self, key: str) -> None:
        with self.session() as session:
            if session.scalars(select(User).where(User.role == "admin")).first() is not None:
                return
            session.add(User(name="admin", role="admin", key_hash=hash_key(key)))
            audit.append(
                session,
                actor="(bootstrap)",
                action="user.create",
                subject="user:admin",
                request_id="startup",
                detail={"role": "admin", "source": "SENTINEL_POLICY_BOOTSTRAP_ADMIN_KEY"},
            )

    # -- Kafka -----------------------------------------------------------------------------
    def producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                from kafka.errors import KafkaError

                from sentinel.kafka.clients import producer

                try:
                    self._producer = producer(
                        self.settings,
                        client_id=f"{self.settings.kafka_client_id}-policy",
                        linger_ms=5,
                    )
                except KafkaError as exc:
                    raise KafkaUnavailable(
                        f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc!r}"
                    ) from None
            return self._producer

    def publish(self, topic: str, key: str, value: bytes) -> tuple[int, int]:
        """Send one record and wait for the broker's ack: (partition, offset)."""
        from kafka.errors import KafkaError

        try:
            meta = self.producer().send(topic, key=key.encode(), value=value).get(30)
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka did not take the record: {exc!r}") from None
        return int(meta.partition), int(meta.offset)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
        self.engine.dispose()

    # -- ingest ----------------------------------------------------------------------------
    def ingest(self, events: list[Any], traceparent: str | None = None) -> IngestResult:
        """Validate each event; produce the valid ones (key = host id, header `traceparent`: the
        request's span) and wait for the acks."""
        from kafka.errors import KafkaError

        headers = [("traceparent", traceparent.encode())] if traceparent else None
        result = IngestResult()
        topic = self.settings.policy_events_topic
        producer = self.producer()
        futures = []
        valid = self._event_valid
        try:
            for index, event in enumerate(events):
                if not valid(event):
                    problems = contract_errors("event", event)
                    path, reason = problems[0] if problems else ("", "not an event")
                    result.rejected.append({"index": index, "field": path, "reason": reason})
                    continue
                futures.append(
                    producer.send(
                        topic,
                        key=str(event["host"]["id"]).encode(),
                        value=orjson.dumps(event),
                        headers=headers,
                    )
                )
            producer.flush(timeout=30)
            for future in futures:
                future.get(0)
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka did not take the events: {exc!r}") from None
        result.accepted = len(futures)
        return result
