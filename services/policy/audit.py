"""The audit log: append-only, each entry hash-chained to the one before it.

An entry's hash is SHA-256 over the canonical JSON of all its columns plus the previous entry's
hash, so changing, removing or reordering any entry breaks the chain from there on. Appends are
serialised by one lock per process (the service runs as one process per database).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.policy.db import AuditRow

GENESIS = "0" * 64
_append_lock = threading.Lock()


def entry_hash(row: AuditRow) -> str:
    fields = [
        row.id,
        row.ts,
        row.actor,
        row.action,
        row.subject,
        row.request_id,
        row.before_digest,
        row.after_digest,
        row.detail,
        row.prev_hash,
    ]
    return hashlib.sha256(orjson.dumps(fields)).hexdigest()


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    request_id: str,
    before: str | None = None,
    after: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditRow:
    """Add one entry and commit the session with it: the change and its record land together."""
    with _append_lock:
        last = session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(1)).first()
        row = AuditRow(
            id=(last.id + 1) if last else 1,
            ts=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            actor=actor,
            action=action,
            subject=subject,
            request_id=request_id,
            before_digest=before,
            after_digest=after,
            detail=orjson.dumps(detail or {}, option=orjson.OPT_SORT_KEYS).decode(),
            prev_hash=last.hash if last else GENESIS,
        )
        row.hash = entry_hash(row)
        session.add(row)
        session.commit()
        return row


@dataclass(frozen=True)
class ChainReport:
    entries: int
    broken_at: int | None = None  # id of the first entry that does not check out
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(session: Session) -> ChainReport:
    """Walk the log in order; report the first entry whose hash or link does not match."""
    prev_hash, expected_id, count = GENESIS, 1, 0
    for row in session.scalars(select(AuditRow).order_by(AuditRow.id)):
        count += 1
        if row.id != expected_id:
            return ChainReport(count, row.id, f"entry {expected_id} is missing (next is {row.id})")
        if row.prev_hash != prev_hash:
            return ChainReport(count, row.id, "its prev_hash does not match the entry before it")
        if entry_hash(row) != row.hash:
            return ChainReport(count, row.id, "its contents do not match its hash (edited)")
        prev_hash, expected_id = row.hash, row.id + 1
    return ChainReport(count)


def as_dict(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "ts": row.ts,
        "actor": row.actor,
        "action": row.action,
        "subject": row.subject,
        "request_id": row.request_id,
        "before_digest": row.before_digest,
        "after_digest": row.after_digest,
        "detail": orjson.loads(row.detail),
        "hash": row.hash,
        "prev_hash": row.prev_hash,
    }
