"""The rule packs a worker runs: loaded from `rules/` at start-up, then hot-swapped from Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sentinel_rhai
from sentinel_rhai import RuleEngine, RuleError

from sentinel.logs import get_logger
from sentinel.rules import Pack, PackError, RuleSpec, load_pack, pack_from_message
from sentinel.rules.signing import PackVerifier, SignatureError, deployment_of, is_for

log = get_logger(__name__)


def _version_key(version: str) -> tuple[int, ...]:
    core = version.split("+", 1)[0].split("-", 1)[0]
    return tuple(int(part) for part in core.split("."))


@dataclass(frozen=True)
class Offer:
    """What happened to a pack offered for hot reload."""

    applied: bool
    reason: str


class RuleSet:
    """One engine plus the packs compiled into it; every change swaps the whole set atomically."""

    def __init__(
        self,
        engine: RuleEngine | None = None,
        verifier: PackVerifier | None = None,
        groups: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine or RuleEngine()
        # With a verifier, only packs signed by a trusted key with allowed capabilities run.
        self.verifier = verifier
        self.groups = groups
        self.packs: dict[str, Pack] = {}
        self.rules: dict[str, tuple[Pack, RuleSpec]] = {}
        self.engine_version = str(sentinel_rhai.__version__)
        self.reloads = 0

    def load_dir(self, rules_dir: Path) -> list[Pack]:
        packs = [load_pack(p.parent) for p in sorted(rules_dir.glob("*/pack.yaml"))]
        self.apply({p.name: p for p in packs})
        return packs

    def apply(self, packs: dict[str, Pack]) -> None:
        """Compile `packs` as the new complete set, or raise (RuleError) and keep the old one."""
        self.engine.replace_all(_specs(packs))  # atomic: all compile or nothing changes
        for pack in packs.values():
            for name, values in pack.lists.items():
                self.engine.set_list(name, values)
        self.packs = dict(packs)
        self.rules = {r.id: (p, r) for p in packs.values() for r in p.rules}
        self.reloads += 1

    def reset_windows(self) -> None:
        """Forget every window (same rules): the rules leave the engine and come back, compiled
        from its cache. Call it from the thread that evaluates."""
        self.engine.replace_all([])
        self.engine.replace_all(_specs(self.packs))

    def offer(self, raw: bytes) -> Offer:
        """Apply a pack message from `sentinel.rules.v1` if it is valid, signed when a verifier
        is set, meant for us, and newer than ours (or a signed rollback the service published)."""
        try:
            message = orjson.loads(raw)
            if not isinstance(message, dict):
                raise PackError("rule-pack message: not a JSON object")
            if self.verifier is not None:
                self.verifier.verify(message)
            pack = pack_from_message(message)
        except (orjson.JSONDecodeError, PackError, SignatureError, KeyError, TypeError) as exc:
            return Offer(False, f"rejected: {exc}")
        target, rollback = deployment_of(message)
        if not is_for(message, self.groups):
            return Offer(False, f"skipped: {pack.name} {pack.version} is for group '{target}'")
        current = self.packs.get(pack.name)
        if current is not None:
            if _version_key(pack.version) < _version_key(current.version) and not rollback:
                return Offer(
                    False, f"ignored: {pack.name} {pack.version} is older than {current.version}"
                )
            if pack.version == current.version:
                if pack.message()["rules"] == current.message()["rules"]:
                    return Offer(False, f"unchanged: {pack.name} {pack.version}")
                return Offer(
                    False,
                    f"rejected: {pack.name} {pack.version} differs from the "
                    "loaded pack of the same version (bump the version)",
                )
        try:
            self.apply({**self.packs, pack.name: pack})
        except RuleError as exc:
            return Offer(False, f"rejected: {pack.name} {pack.version}: {exc}")
        return Offer(True, f"applied: {pack.name} {pack.version} ({len(pack.rules)} rules)")


def _specs(packs: dict[str, Pack]) -> list[Any]:
    """What `RuleEngine.replace_all` takes for every rule of `packs`."""
    return [spec for pack in packs.values() for spec in pack.engine_specs()]
