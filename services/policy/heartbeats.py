"""Which pack versions the workers and agents run: the latest heartbeat per instance, from
`POST /heartbeats` or from the compacted `sentinel.heartbeats.v1` that workers and agents publish
to (contract `heartbeat`), which the service follows from the start while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from sqlalchemy.orm import Session

from sentinel.contracts import ContractError, validate
from sentinel.logs import get_logger
from sentinel.settings import Settings
from services.policy.db import HeartbeatRow, now

log = get_logger(__name__)


def record_heartbeat(
    session: Session,
    *,
    instance: str,
    kind: str,
    group: str,
    packs: Mapping[str, Any],
    reported_by: str,
) -> None:
    """Keep `instance`'s latest report (committed)."""
    row = session.get(HeartbeatRow, instance)
    if row is None:
        row = HeartbeatRow(instance=instance)
        session.add(row)
    row.kind, row.group, row.packs = kind, group, {k: str(v) for k, v in packs.items()}
    row.reported_by, row.seen_at = reported_by, now()
    session.commit()


async def follow_heartbeats(settings: Settings, sessions: Any) -> None:
    """Read the heartbeats topic from the start and keep following it (cancel to stop)."""
    topic = settings.policy_heartbeats_topic
    while True:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{settings.kafka_client_id}-policy-heartbeats",
        )
        try:
            await consumer.start()
            async for message in consumer:
                try:
                    beat = orjson.loads(message.value or b"")
                    validate("heartbeat", beat)
                except (orjson.JSONDecodeError, ContractError) as exc:
                    log.warning("heartbeat ignored", offset=message.offset, reason=str(exc))
                    continue
                await asyncio.to_thread(_store, sessions, beat)
        except KafkaError as exc:
            log.warning("heartbeats topic unavailable; retrying", error=repr(exc))
            await asyncio.sleep(2)
        finally:
            await consumer.stop()


def _store(sessions: Any, beat: dict[str, Any]) -> None:
    with sessions() as session:
        record_heartbeat(
            session,
            instance=beat["instance"],
            kind=beat["kind"],
            group=beat.get("group", ""),
            packs=beat["packs"],
            reported_by=f"kafka:{beat['kind']}",
        )
