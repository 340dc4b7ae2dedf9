"""Redaction of secrets and configured fields before anything reaches a log."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.gateway.config import (
    ALWAYS_REDACTED_HEADERS,
    ALWAYS_REDACTED_PATTERNS,
    RedactionConfig,
)


class Redactor:
    """Headers by name, JSON fields by name or dotted path (`*` = any), strings by regex."""

    def __init__(self, config: RedactionConfig) -> None:
        self.replacement = config.replacement
        self.headers = frozenset(h.lower() for h in (*ALWAYS_REDACTED_HEADERS, *config.headers))
        self.fields = frozenset(f.lower() for f in config.fields)
        self.paths = tuple(tuple(p.split(".")) for p in config.paths)
        self.pattern = re.compile(
            "|".join(_scoped(p) for p in (*ALWAYS_REDACTED_PATTERNS, *config.patterns))
        )

    def text(self, value: str) -> str:
        return self.pattern.sub(self.replacement, value)

    def headers_of(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            name: self.replacement if name.lower() in self.headers else self.text(value)
            for name, value in headers.items()
        }

    def value(self, value: Any) -> Any:
        """A redacted copy of a JSON value: field names and patterns (the original is kept)."""
        return self._walk(value, ())

    def body(self, value: Any) -> Any:
        """A redacted copy of a request or response body: paths (rooted at the body) too."""
        return self._walk(value, self.paths)

    def _walk(self, value: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                rest = _descend(paths, str(key))
                if str(key).lower() in self.fields or () in rest:
                    out[key] = self.replacement
                else:
                    out[key] = self._walk(item, rest)
            return out
        if isinstance(value, list):
            result = []
            for i, item in enumerate(value):
                rest = _descend(paths, str(i))
                result.append(self.replacement if () in rest else self._walk(item, rest))
            return result
        return value


def _descend(paths: tuple[tuple[str, ...], ...], key: str) -> tuple[tuple[str, ...], ...]:
    """The remainders of the paths that `key` continues; `()` among them means `key` is a match."""
    return tuple(p[1:] for p in paths if p and p[0] in ("*", key))


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _scoped(pattern: str) -> str:
    """`pattern` as one alternative of a combined regex: leading global flags like `(?i)`
    become flags of its own group, `(?i:...)`, which Python allows mid-expression."""
    match = _GLOBAL_FLAGS.match(pattern)
    if match:
        return f"(?{match[1]}:{pattern[match.end() :]})"
    return f"(?:{pattern})"
