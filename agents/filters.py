"""Rule-driven filtering: agents keep only what the deployed rule packs need.

Agents follow the compacted `sentinel.rules.v1` like the workers do. Each pack may carry an
`agent` section (contract `rule-pack`):

    "agent": {"drop_unneeded_kinds": true, "sample": {"net": 0.25}}

Across all packs, a kind is *wanted* when some pack's rules read it, or when some pack does not
ask to drop the kinds it does not need. A wanted kind is kept at the largest sampling rate the
packs wanting it give (1.0 when they give none); an unwanted kind is dropped at the agent. With no
pack known yet everything is kept: an agent never drops data before it has heard from the rules.

With `SENTINEL_RULES_TRUSTED_KEYS` set, a pack counts only when it carries a valid signature by a
trusted key and asks only for allowed capabilities (sentinel/rules/signing.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from sentinel.contracts import ContractError, validate
from sentinel.logs import get_logger
from sentinel.rules.signing import PackVerifier, SignatureError, is_for
from sentinel.settings import Settings, get_settings

log = get_logger(__name__)
KINDS = ("proc", "file", "net", "dns", "auth")


def rates_for(packs: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Kind -> kept fraction (0.0 = dropped) for a set of packs (name -> pack document)."""
    if not packs:
        return dict.fromkeys(KINDS, 1.0)
    rates = dict.fromkeys(KINDS, 0.0)
    for pack in packs.values():
        agent = pack.get("agent") or {}
        needed = {kind for rule in pack.get("rules", []) for kind in rule.get("kinds", [])}
        wanted = needed if agent.get("drop_unneeded_kinds") else set(KINDS)
        sample = agent.get("sample") or {}
        for kind in wanted:
            rates[kind] = max(rates[kind], float(sample.get(kind, 1.0)))
    return rates


class RuleFilter:
    """The current per-kind rates, swapped atomically when a pack arrives (thread-safe reads)."""

    def __init__(
        self, verifier: PackVerifier | None = None, groups: frozenset[str] = frozenset()
    ) -> None:
        self.verifier = verifier
        self.groups = groups
        self.packs: dict[str, dict[str, Any]] = {}
        self.rates: dict[str, float] = rates_for({})
        self.versions: dict[str, str] = {}
        self.rejected = 0
        self.changed = threading.Event()

    def offer(self, name: str, value: bytes | None) -> str:
        """Apply one record of the rules topic; returns what happened, for the log."""
        if value is None:  # a tombstone: the pack was withdrawn
            if self.packs.pop(name, None) is None:
                return "skipped: tombstone of an unknown pack"
            self.versions.pop(name, None)
            self._recompute()
            return "removed"
        try:
            pack = orjson.loads(value)
            if self.verifier is not None:
                if not isinstance(pack, dict):
                    raise SignatureError("unsigned: not a JSON object")
                self.verifier.verify(pack)
            validate("rule-pack", pack)
        except (orjson.JSONDecodeError, ContractError, SignatureError) as exc:
            self.rejected += 1
            return f"rejected: {exc}"
        if not is_for(pack, self.groups):
            return "skipped: deployed to another group"
        self.packs[pack["name"]] = pack
        self.versions[pack["name"]] = pack["version"]
        self._recompute()
        return "applied"

    def _recompute(self) -> None:
        self.rates = rates_for(self.packs)  # one reference swap: readers see old or new
        self.changed.set()

    def rate(self, kind: str) -> float:
        return self.rates.get(kind, 1.0)


def follow_rules(
    bootstrap: str,
    topic: str,
    rule_filter: RuleFilter,
    stop: threading.Event,
    *,
    client_id: str = "sentinel-agent-rules",
    on_change: Callable[[str, str], None] | None = None,
    settings: Settings | None = None,
) -> None:
    """Read the whole rules topic from the start and keep following it until `stop` is set.

    A filter built without a verifier gets the one the settings ask for (`get_settings()` when
    none are given), so agents verify signatures whenever trusted keys are configured.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    settings = settings or get_settings()
    if rule_filter.verifier is None:
        rule_filter.verifier = PackVerifier.from_settings(settings)
    if not rule_filter.groups:
        rule_filter.groups = settings.rules_group_set

    while not stop.is_set():
        consumer = None
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id=client_id,
                request_timeout_ms=30_000,
            )
            partitions = consumer.partitions_for_topic(topic) or set()
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not assigned:
                stop.wait(2.0)
                continue
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        name = (record.key or b"?").decode(errors="replace")
                        result = rule_filter.offer(name, record.value)
                        log.info(
                            "agent rule filter",
                            pack=name,
                            offset=record.offset,
                            result=result,
                            rates=rule_filter.rates,
                        )
                        if on_change:
                            on_change(name, result)
        except KafkaError as exc:
            log.warning("rules topic unavailable; retrying", error=repr(exc))
            stop.wait(2.0)
        finally:
            if consumer is not None:
                consumer.close()
