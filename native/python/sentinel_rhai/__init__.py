"""Sentinel Lab's sandboxed Rhai rule engine (the native ``_native`` module, re-exported)."""

from sentinel_rhai._native import (
    CAPABILITIES,
    BatchResult,
    Failure,
    Limits,
    Match,
    ParseFailure,
    Rule,
    RuleCompileError,
    RuleEngine,
    RuleError,
    RuleLimitError,
    __version__,
)

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
