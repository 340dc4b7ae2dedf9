"""Type stubs for the native rule engine (hand-written; keep in step with src/python/)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, final

__all__ = [
    "CAPABILITIES",
    "BatchResult",
    "Failure",
    "Limits",
    "Match",
    "ParseFailure",
    "Rule",
    "RuleCompileError",
    "RuleEngine",
    "RuleError",
    "RuleLimitError",
    "__version__",
]

__version__: Final[str]
CAPABILITIES: Final[list[str]]

class RuleError(Exception):
    """Base class of every error the rule engine raises."""

    rule_id: str
    reason: str

class RuleCompileError(RuleError):
    """A rule does not compile; ``line``/``column`` are 1-based, None when unknown."""

    line: int | None
    column: int | None

class RuleLimitError(RuleError):
    """A rule exceeds a load-time limit (``max_source_size``)."""

@final
class Limits:
    """Resource limits for one rule on one event; omitted arguments keep their defaults."""

    def __new__(
        cls,
        *,
        max_operations: int | None = None,
        max_call_levels: int | None = None,
        max_string_size: int | None = None,
        max_array_size: int | None = None,
        max_map_size: int | None = None,
        max_expr_depth: int | None = None,
        max_emits_per_event: int | None = None,
        deadline_ms: int | None = None,
        max_window_keys: int | None = None,
        max_window_entries_per_key: int | None = None,
        max_source_size: int | None = None,
    ) -> Limits: ...
    @property
    def max_operations(self) -> int: ...
    @property
    def max_call_levels(self) -> int: ...
    @property
    def max_string_size(self) -> int: ...
    @property
    def max_array_size(self) -> int: ...
    @property
    def max_map_size(self) -> int: ...
    @property
    def max_expr_depth(self) -> int: ...
    @property
    def max_emits_per_event(self) -> int: ...
    @property
    def deadline_ms(self) -> int: ...
    @property
    def max_window_keys(self) -> int: ...
    @property
    def max_window_entries_per_key(self) -> int: ...
    @property
    def max_source_size(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

_LimitsLike = Limits | Mapping[str, int]

@final
class Rule:
    @property
    def id(self) -> str: ...
    @property
    def hash(self) -> str:
        """SHA-256 of the source, lowercase hex."""
    @property
    def kinds(self) -> list[str] | None:
        """Event kinds the rule sees; None for every kind."""
    @property
    def capabilities(self) -> list[str]: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def limits(self) -> Limits: ...

@final
class Match:
    rule_id: str
    event_index: int
    alert: dict[str, Any]
    """At least rule_id, title, severity, context, dedup; plus meta and emitted keys."""

@final
class Failure:
    rule_id: str
    event_index: int
    kind: Literal["limit", "runtime", "capability", "panic"]
    message: str
    line: int | None
    column: int | None

@final
class ParseFailure:
    event_index: int
    message: str

@final
class BatchResult:
    events: int
    """Events decoded and offered to the rules (blank lines and parse errors excluded)."""
    matches: list[Match]
    failures: list[Failure]
    parse_errors: list[ParseFailure]

class _RuleSpec(TypedDict, total=False):
    id: str
    source: str
    capabilities: Sequence[str]
    kinds: Sequence[str] | None
    limits: _LimitsLike | None
    meta: Mapping[str, Any] | None

class _RuleStats(TypedDict):
    evals: int
    matches: int
    failures: int
    total_ns: int
    """Time spent evaluating; natively decided evaluations are timed on a random eighth of
    events and counted eight times (an estimate: a clock read costs about as much as one)."""
    native: int
    """Evaluations the native fast path decided (no alert) without running Rhai."""

@final
class RuleEngine:
    """Sandboxed Rhai rules over JSON events. Thread-safe; batches release the GIL."""

    def __new__(cls, limits: _LimitsLike | None = None, *, fast_path: bool = True) -> RuleEngine:
        """`fast_path=False` interprets every evaluation in Rhai; results are the same, it
        exists to show that and to measure the native fast path's gain."""
    @property
    def limits(self) -> Limits: ...
    @property
    def compiles(self) -> int:
        """Rule sources actually compiled so far (reloading unchanged source is free)."""
    def load(
        self,
        rule_id: str,
        source: str,
        *,
        capabilities: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        limits: _LimitsLike | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Rule: ...
    def replace_all(self, rules: Iterable[_RuleSpec]) -> None:
        """Atomic: every rule compiles and the set takes over, or nothing changes."""
    def remove(self, rule_id: str) -> bool: ...
    def rules(self) -> list[Rule]: ...
    def set_list(self, name: str, values: Iterable[str]) -> None: ...
    def set_enrichment(self, kind: str, mapping: Mapping[str, Mapping[str, Any]]) -> None: ...
    def evaluate_jsonl(self, data: bytes) -> BatchResult:
        """One JSON event per line, GIL released. ``event_index`` is the 0-based line
        number: blank lines (only spaces, tabs, CR) are skipped but still counted."""
    def evaluate(self, events: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Events as dicts; ``event_index`` is the position in ``events``."""
    def stats(self) -> dict[str, _RuleStats]: ...
    def __len__(self) -> int: ...
