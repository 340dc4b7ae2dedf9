"""API keys, quotas and usage: the key store (SQLite by default, Postgres by URL) and the
in-process accounting the gateway does per request (key cache, RPM and tokens/day, usage buffer).

Keys are stored only as SHA-256 hashes plus a short visible prefix; the plain key is shown once,
when it is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from sentinel.logs import get_logger
from services.gateway.errors import GatewayError, unauthorized

log = get_logger(__name__)
KEY_PREFIX = "sgw-"  # not "sk-": logs redact every sk-... string, and the prefix must show
VISIBLE_CHARS = 12  # "sgw-AbCdEfGh": enough to tell keys apart in logs and lists
ALL_MODELS = "*"

metadata = sa.MetaData()
keys_table = sa.Table(
    "gateway_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("models", sa.JSON, nullable=False),  # ["*"] or the model names allowed
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tokens_per_day", sa.BigInteger, nullable=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
usage_table = sa.Table(
    "gateway_usage",
    metadata,
    sa.Column("key_id", sa.Integer, sa.ForeignKey("gateway_keys.id"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("rule", sa.String(200), primary_key=True),  # "" when the client sent no rule
    sa.Column("requests", sa.BigInteger, nullable=False, default=0),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, default=0),
)


class KeyStoreError(ValueError):
    pass


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    models: tuple[str, ...]
    rpm: int | None
    tokens_per_day: int | None
    disabled: bool
    created_at: datetime

    def allows(self, model: str) -> bool:
        return ALL_MODELS in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str
    day: date
    model: str
    rule: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


def _row_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        models=tuple(row.models),
        rpm=row.rpm,
        tokens_per_day=row.tokens_per_day,
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


class KeyStore:
    """The database of keys and usage; synchronous (the gateway calls it from a thread)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args = {"check_same_thread": False, "timeout": 30}
        try:
            self.engine: Engine = sa.create_engine(url, connect_args=connect_args)
        except (ImportError, sa.exc.ArgumentError) as exc:
            raise KeyStoreError(
                f"cannot open the gateway database {parsed.render_as_string()}: {exc}"
            ) from exc
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- keys

    def create(
        self,
        name: str,
        models: Sequence[str] = (ALL_MODELS,),
        rpm: int | None = None,
        tokens_per_day: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key named `name`; returns it with the plain key (not stored, shown once)."""
        plain = KEY_PREFIX + secrets.token_urlsafe(24)
        return self._insert(name, plain, models, rpm, tokens_per_day), plain

    def register(self, name: str, plain: str, models: Sequence[str] = (ALL_MODELS,)) -> ApiKey:
        """Make `plain` a valid key (the embedded client key): kept as it is when known, else
        added as `<name>-<hash prefix>`, so two processes with different keys never replace
        each other's. A key an operator revoked stays revoked."""
        existing = self.find(plain)
        if existing is not None:
            return existing
        return self._insert(f"{name}-{hash_key(plain)[:8]}", plain, models, None, None)

    def _insert(
        self,
        name: str,
        plain: str,
        models: Sequence[str],
        rpm: int | None,
        tokens_per_day: int | None,
    ) -> ApiKey:
        if not name.strip():
            raise KeyStoreError("a key needs a name")
        if not models:
            raise KeyStoreError(f"key '{name}': give at least one model, or '*' for all")
        try:
            with self.engine.begin() as con:
                con.execute(
                    keys_table.insert().values(
                        name=name,
                        prefix=plain[:VISIBLE_CHARS],
                        key_hash=hash_key(plain),
                        models=list(models),
                        rpm=rpm,
                        tokens_per_day=tokens_per_day,
                        disabled=False,
                        created_at=datetime.now(UTC),
                    )
                )
        except sa.exc.IntegrityError:
            raise KeyStoreError(
                f"a key named '{name}' exists: revoke it or choose another name"
            ) from None
        key = self.find(plain)
        assert key is not None
        return key

    def find(self, plain: str) -> ApiKey | None:
        with self.engine.connect() as con:
            row = con.execute(
                sa.select(keys_table).where(keys_table.c.key_hash == hash_key(plain))
            ).first()
        return _row_key(row) if row is not None else None

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(keys_table).order_by(keys_table.c.id)).all()
        return [_row_key(r) for r in rows]

    def revoke(self, name_or_prefix: str) -> ApiKey:
        """Disable the key with this name or visible prefix (usage is kept)."""
        matches = [k for k in self.list_keys() if name_or_prefix in (k.name, k.prefix)]
        if not matches:
            raise KeyStoreError(f"no key named or prefixed '{name_or_prefix}' (see `keys list`)")
        if len(matches) > 1:
            raise KeyStoreError(f"'{name_or_prefix}' matches several keys: give the name")
        with self.engine.begin() as con:
            con.execute(
                keys_table.update().where(keys_table.c.id == matches[0].id).values(disabled=True)
            )
        return matches[0]

    # --- usage

    def add_usage(self, counts: dict[tuple[int, date, str, str], list[int]]) -> None:
        """Add (requests, prompt, completion) to the rows of (key id, day, model, rule)."""
        if not counts:
            return
        u = usage_table.c
        with self.engine.begin() as con:
            for (key_id, day, model, rule), (requests, prompt, completion) in counts.items():
                where = sa.and_(u.key_id == key_id, u.day == day, u.model == model, u.rule == rule)
                updated = con.execute(
                    usage_table.update()
                    .where(where)
                    .values(
                        requests=u.requests + requests,
                        prompt_tokens=u.prompt_tokens + prompt,
                        completion_tokens=u.completion_tokens + completion,
                    )
                )
                if updated.rowcount == 0:
                    con.execute(
                        usage_table.insert().values(
                            key_id=key_id,
                            day=day,
                            model=model,
                            rule=rule,
                            requests=requests,
                            prompt_tokens=prompt,
                            completion_tokens=completion,
                        )
                    )

    def tokens_used(self, key_id: int, day: date) -> int:
        u = usage_table.c
        with self.engine.connect() as con:
            total = con.execute(
                sa.select(sa.func.sum(u.prompt_tokens + u.completion_tokens)).where(
                    u.key_id == key_id, u.day == day
                )
            ).scalar()
        return int(total or 0)

    def usage(self, since: date | None = None, key: str | None = None) -> list[UsageRow]:
        u, k = usage_table.c, keys_table.c
        query = (
            sa.select(
                k.name,
                u.day,
                u.model,
                u.rule,
                u.requests,
                u.prompt_tokens,
                u.completion_tokens,
            )
            .join_from(usage_table, keys_table, u.key_id == k.id)
            .order_by(k.name, u.day, u.model, u.rule)
        )
        if since is not None:
            query = query.where(u.day >= since)
        if key is not None:
            query = query.where(sa.or_(k.name == key, k.prefix == key))
        with self.engine.connect() as con:
            return [UsageRow(*row) for row in con.execute(query).all()]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the CLI reads keys and usage while the server writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Accounting:
    """What each request needs from the key store, kept off the request path: keys cached for
    `cache_s`, RPM windows and tokens/day in memory, usage flushed every `flush_s`.

    Counts are per process: run one gateway process per key store, or accept per-process quotas.
    """

    def __init__(self, store: KeyStore, cache_s: float = 5.0, flush_s: float = 1.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self.flush_s = flush_s
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}
        self._minute: dict[int, deque[float]] = {}
        self._tokens: dict[tuple[int, date], int] = {}
        self._pending: dict[tuple[int, date, str, str], list[int]] = {}
        self._lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise unauthorized(
                "no API key: send `Authorization: Bearer <key>` (create one with "
                "`sentinel gateway keys create`)"
            )
        scheme, _, plain = authorization.partition(" ")
        plain = plain.strip()
        if scheme.lower() != "bearer" or not plain:
            raise unauthorized("the Authorization header must be `Bearer <key>`")
        digest = hash_key(plain)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is None or now - cached[0] > self.cache_s:
            cached = (now, await asyncio.to_thread(self.store.find, plain))
            self._keys[digest] = cached
        key = cached[1]
        if key is None:
            raise unauthorized(f"unknown API key '{plain[:VISIBLE_CHARS]}...'")
        if key.disabled:
            raise unauthorized(f"API key '{key.prefix}...' ({key.name}) was revoked")
        return key

    @staticmethod
    def authorize(key: ApiKey, model: str) -> None:
        if not key.allows(model):
            raise GatewayError(
                403,
                f"key '{key.name}' may not use model '{model}' (allowed: {', '.join(key.models)})",
                type="permission_error",
                code="model_not_allowed",
                param="model",
            )

    async def admit(self, key: ApiKey) -> None:
        """Count one request against the key's quotas, or raise 429 with Retry-After."""
        now = time.monotonic()
        if key.tokens_per_day is not None:
            day = today()
            used = self._tokens.get((key.id, day))
            if used is None:
                stored = await asyncio.to_thread(self.store.tokens_used, key.id, day)
                used = self._tokens.setdefault((key.id, day), stored)
            if used >= key.tokens_per_day:
                midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
                wait = math.ceil((midnight - datetime.now(UTC)).total_seconds())
                raise _quota(
                    f"key '{key.name}' used {used:,} of its {key.tokens_per_day:,} tokens today "
                    "(UTC); the quota resets at midnight UTC",
                    "tokens_per_day",
                    max(wait, 1),
                )
        if key.rpm is not None:
            window = self._minute.setdefault(key.id, deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= key.rpm:
                wait = math.ceil(60.0 - (now - window[0]))
                raise _quota(
                    f"key '{key.name}' is limited to {key.rpm} requests per minute",
                    "requests_per_minute",
                    max(wait, 1),
                )
            window.append(now)

    def record(
        self, key: ApiKey, model: str, rule: str | None, prompt: int, completion: int
    ) -> None:
        day = today()
        tokens = (key.id, day)
        self._tokens[tokens] = self._tokens.get(tokens, 0) + prompt + completion
        with self._lock:
            row = self._pending.setdefault((key.id, day, model, rule or ""), [0, 0, 0])
            row[0] += 1
            row[1] += prompt
            row[2] += completion

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            self.store.add_usage(pending)
        except Exception:
            with self._lock:  # keep the counts for the next flush
                for k, (r, p, c) in pending.items():
                    row = self._pending.setdefault(k, [0, 0, 0])
                    row[0] += r
                    row[1] += p
                    row[2] += c
            raise

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.to_thread(self.flush)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:
                log.error("gateway usage flush failed; retrying", error=repr(exc))


def _quota(message: str, code: str, retry_after: int) -> GatewayError:
    return GatewayError(
        429,
        f"{message}; retry after {retry_after} s",
        type="rate_limit_error",
        code=code,
        headers={"Retry-After": str(retry_after)},
    )
