"""The enrichment stage: local feeds plus an optional remote reputation service, giving the
rule engine its tables and each event an `enrichment` object."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sentinel.logs import get_logger
from streams.enrichment.adapters import (
    FeedData,
    FeedError,
    FileHashReputation,
    HostInventory,
    IpReputation,
    LocalFeed,
    Record,
    parse_address,
)
from streams.enrichment.remote import RemoteAnswer, RemoteLookup
from streams.enrichment.resilience import CircuitBreaker, RetryPolicy, TtlCache

log = get_logger(__name__)
DEFAULT_FEEDS = Path(__file__).resolve().parent / "feeds"
Tables = dict[str, dict[str, Record]]
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# Asked of a wedged remote task after the batch deadline, before it is cancelled.
_CANCEL_GRACE_S = 0.02


@dataclass(frozen=True, slots=True)
class EnrichmentConfig:
    """Where the feeds are and how hard to try the remote service. Paths or http(s) URLs."""

    threat_intel: str | Path = DEFAULT_FEEDS / "threat_intel_ip.csv"
    file_hashes: str | Path = DEFAULT_FEEDS / "file_hashes.csv"
    hosts: str | Path = DEFAULT_FEEDS / "hosts.csv"
    feed_fetch_timeout_s: float = 10.0
    remote_url: str | None = None  # a reputation service: GET {remote_url}/{kind}/{key}
    remote_kinds: tuple[str, ...] = ("ip", "file_hash")
    remote_timeout_s: float = 0.1  # per call
    remote_attempts: int = 2  # per key, the first included
    remote_concurrency: int = 16  # calls in flight at once (the bulkhead)
    breaker_failures: int = 5  # consecutive failed calls that open the circuit
    breaker_cooldown_s: float = 30.0  # open this long before one trial call
    cache_size: int = 10_000
    cache_ttl_s: float = 300.0
    negative_cache_ttl_s: float = 60.0  # "unknown" may become known sooner than a record changes
    batch_deadline_s: float = 0.2  # remote answers later than this are left out of the batch

    def __post_init__(self) -> None:
        for name in ("remote_timeout_s", "batch_deadline_s", "feed_fetch_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"enrichment {name} must be positive, got {getattr(self, name)}")
        unknown = set(self.remote_kinds) - {"ip", "file_hash", "host"}
        if unknown:
            raise ValueError(
                f"enrichment remote_kinds has {sorted(unknown)}; use ip, file_hash or host"
            )

    @classmethod
    def from_settings(cls, settings: object) -> EnrichmentConfig:
        """Take `enrichment_<field>` attributes (e.g. `enrichment_remote_url`) that the settings
        object has and that are not None; the rest keep their defaults."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(settings, f"enrichment_{f.name}", None)
            if value is not None:
                values[f.name] = tuple(value) if f.name == "remote_kinds" else value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BatchEnrichment:
    """What one `enrich_batch` did."""

    events_enriched: int  # events that got (or added to) an `enrichment` object
    keys_looked_up: int  # distinct host ids, addresses and hashes in the batch
    remote_keys: int  # of those, asked of the remote service
    degraded_keys: int  # remote keys with no answer in time (timeout, error, open circuit)
    # Records found for keys that `engine_tables()` lacks (remote answers, addresses matched by
    # a range), by kind, keyed as the events spell them: merge them into the engine's tables.
    extra_tables: Tables = field(default_factory=dict)


# Which event fields are enriched besides `host.id` (every event): by kind of event, the object
# holding them and, for each, (field, table kind, name under `event["enrichment"]`).
_KIND_FIELDS: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "net": ("net", (("dst_ip", "ip", "dst_ip"), ("src_ip", "ip", "src_ip"))),
    "auth": ("auth", (("src_ip", "ip", "src_ip"),)),
    "file": ("file", (("sha256", "file_hash", "file"),)),
}


def _wanted(event: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """(name under `enrichment`, table kind, key) for every enrichable field of `event`."""
    out = []
    host = event.get("host")
    key = host.get("id") if isinstance(host, dict) else None
    if isinstance(key, str) and key:
        out.append(("host", "host", key))
    spec = _KIND_FIELDS.get(str(event.get("kind")))
    if spec is not None:
        body = event.get(spec[0])
        if isinstance(body, dict):
            for name, table, label in spec[1]:
                key = body.get(name)
                if isinstance(key, str) and key:
                    out.append((label, table, key))
    return tuple(out)


def _remote_key(kind: str, key: str) -> str | None:
    """The key as the remote service should see it, or None when it is not worth asking."""
    if kind == "ip":
        try:
            return str(parse_address(key))
        except ValueError:
            return None
    if kind == "file_hash":
        return key.lower() if _SHA256.fullmatch(key) else None
    return key


class Enricher:
    """Feeds in memory, an optional remote service, and the batch annotation of events."""

    def __init__(self, config: EnrichmentConfig | None = None) -> None:
        config = config if config is not None else EnrichmentConfig()
        self.config = config
        timeout = config.feed_fetch_timeout_s
        self.ip = IpReputation(config.threat_intel, fetch_timeout_s=timeout)
        self.file_hashes = FileHashReputation(config.file_hashes, fetch_timeout_s=timeout)
        self.hosts = HostInventory(config.hosts, fetch_timeout_s=timeout)
        self._feeds: dict[str, LocalFeed] = {
            feed.kind: feed for feed in (self.ip, self.file_hashes, self.hosts)
        }
        self.remote: RemoteLookup | None = None
        if config.remote_url:
            self.remote = RemoteLookup(
                config.remote_url,
                timeout_s=config.remote_timeout_s,
                deadline_s=config.batch_deadline_s,
                retry=RetryPolicy(attempts=config.remote_attempts),
                breaker=CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s),
                concurrency=config.remote_concurrency,
                cache=TtlCache(config.cache_size, config.cache_ttl_s),
                negative_ttl_s=config.negative_cache_ttl_s,
            )

    @classmethod
    def from_defaults(cls) -> Enricher:
        """The feeds shipped in `streams/enrichment/feeds/`, no remote service."""
        return cls()

    @classmethod
    def from_settings(cls, settings: object) -> Enricher:
        return cls(EnrichmentConfig.from_settings(settings))

    # --- tables and provenance

    def engine_tables(self) -> Tables:
        """{"ip": ..., "file_hash": ..., "host": ...} for `RuleEngine.set_enrichment`."""
        return {kind: feed.table() for kind, feed in self._feeds.items()}

    @property
    def snapshot(self) -> str:
        """Names the content of every feed, e.g. 'ti:4934a40e6600+fh:af446d7ea652+hosts:...'."""
        return "+".join(f"{feed.prefix}:{feed.snapshot}" for feed in self._feeds.values())

    def metrics(self) -> dict[str, dict[str, int | str]]:
        """Counters per adapter ('ti', 'fh', 'hosts', 'remote'), and the remote breaker's state."""
        out: dict[str, dict[str, int | str]] = {
            feed.prefix: dict(feed.metrics.as_dict()) for feed in self._feeds.values()
        }
        if self.remote is not None:
            out["remote"] = {
                **self.remote.metrics.as_dict(),
                "breaker": self.remote.breaker.state.value,
                "breaker_opened": self.remote.breaker.times_opened,
            }
        return out

    def reload(self) -> bool:
        """Re-read every feed; True when any content changed. All or nothing: when one feed fails
        (`FeedError`, naming every problem) all keep their current content."""
        read: list[tuple[LocalFeed, FeedData]] = []
        problems: list[str] = []
        for feed in self._feeds.values():
            try:
                read.append((feed, feed.read()))
            except FeedError as exc:
                problems.extend(exc.problems)
        if problems:
            raise FeedError(problems)
        before = self.snapshot
        changed = [feed.install(data) for feed, data in read]
        if any(changed):
            log.info("enrichment feeds reloaded", before=before, after=self.snapshot)
        return any(changed)

    async def aclose(self) -> None:
        if self.remote is not None:
            await self.remote.aclose()

    # --- the stage

    async def enrich_batch(self, events: list[dict[str, Any]]) -> BatchEnrichment:
        """Add `event["enrichment"]` (host, dst_ip, src_ip, file: only what was found) to each
        event. Remote lookups run concurrently under one deadline; late keys stay unenriched."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.batch_deadline_s
        wanted = [_wanted(event) for event in events]
        keys = {(kind, key) for fields_ in wanted for _, kind, key in fields_}

        found: dict[tuple[str, str], Record] = {}
        ask: list[tuple[str, str, str]] = []  # (kind, key as in the event, key for the service)
        remote_kinds = self.config.remote_kinds if self.remote is not None else ()
        for kind, key in keys:
            record = self._feeds[kind].lookup(key)
            if record is not None:
                found[(kind, key)] = record
            # A range match is less specific than what a reputation service knows of the address.
            ranged = kind == "ip" and record is not None and "/" in record["indicator"]
            if kind in remote_kinds and (record is None or ranged):
                remote_key = _remote_key(kind, key)
                if remote_key is not None:
                    ask.append((kind, key, remote_key))

        degraded = 0
        if ask:
            for (kind, key, _), answer in zip(ask, await self._ask(ask, deadline), strict=True):
                if answer.record is not None:
                    found[(kind, key)] = answer.record
                degraded += answer.degraded

        extra: Tables = {}
        for (kind, key), record in found.items():
            if key not in self._feeds[kind]:
                extra.setdefault(kind, {})[key] = record

        enriched = 0
        # Events with the same fields found share one annotation (a batch has few hosts and
        # addresses): built and encoded once. Annotations are read-only, like the feeds.
        shared: dict[tuple[tuple[str, str, str], ...], dict[str, Record]] = {}
        for event, fields_ in zip(events, wanted, strict=True):
            annotation = shared.get(fields_)
            if annotation is None:
                annotation = shared[fields_] = {
                    label: found[(kind, key)]
                    for label, kind, key in fields_
                    if (kind, key) in found
                }
            if not annotation:
                continue
            enriched += 1
            existing = event.get("enrichment")
            if isinstance(existing, dict):
                existing.update(annotation)  # the event's own object, not the shared one
            else:
                event["enrichment"] = annotation
        return BatchEnrichment(
            events_enriched=enriched,
            keys_looked_up=len(keys),
            remote_keys=len(ask),
            degraded_keys=degraded,
            extra_tables=extra,
        )

    async def _ask(self, ask: list[tuple[str, str, str]], deadline: float) -> list[RemoteAnswer]:
        """Remote answers for `ask`, in order; a key with no answer by `deadline` is degraded."""
        remote = self.remote
        assert remote is not None
        budget = max(deadline - asyncio.get_running_loop().time(), 0.0)
        tasks = [
            asyncio.create_task(remote.lookup(kind, remote_key, budget_s=budget))
            for kind, _, remote_key in ask
        ]
        # Each lookup keeps to the budget itself; the grace only bounds a task that misbehaves.
        _, pending = await asyncio.wait(tasks, timeout=budget + _CANCEL_GRACE_S)
        for task in pending:
            task.cancel()
            remote.metrics.timeouts += 1
            remote.metrics.degraded += 1
        if pending:
            await asyncio.wait(pending)
        answers = []
        for task in tasks:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:  # a bug, not an outage; the batch still goes on
                log.error("enrichment lookup raised", error=repr(exc))
                remote.metrics.errors += 1
                remote.metrics.degraded += 1
            if task.cancelled() or exc is not None:
                answers.append(RemoteAnswer(None, degraded=True))
            else:
                answers.append(task.result())
        return answers
