"""The message contracts (JSON Schemas under `contracts/`): cheap validation with errors for people.

Schemas are compiled once per process (jsonschema-rs); `validate` is on the stream hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from sentinel.settings import PROJECT_ROOT

KINDS = ("event", "alert", "rule-pack", "triage", "heartbeat")
# The `schema` field of each message names its contract, so a file of mixed kinds validates too.
SCHEMA_IDS = {
    "sentinel.event/1": "event",
    "sentinel.alert/1": "alert",
    "sentinel.rule-pack/1": "rule-pack",
    "sentinel.triage/1": "triage",
    "sentinel.heartbeat/1": "heartbeat",
}
CONTRACTS_DIR = PROJECT_ROOT / "contracts"


class ContractError(ValueError):
    """A message broke its contract. `path` is the dotted field path ('' for the whole message)."""

    def __init__(self, kind: str, path: str, reason: str) -> None:
        self.kind = kind
        self.path = path
        self.reason = reason
        where = f"field '{path}'" if path else "message"
        super().__init__(f"{kind}: {where}: {reason}")


@dataclass(frozen=True)
class LineError:
    line: int
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"field '{self.path}'" if self.path else "message"
        return f"line {self.line}: {where}: {self.reason}"


@dataclass
class FileReport:
    path: Path
    lines: int = 0
    valid: int = 0
    bad: int = 0
    errors: list[LineError] = field(default_factory=list)  # the first `max_errors` bad lines


def schema_path(kind: str, contracts_dir: Path = CONTRACTS_DIR) -> Path:
    return contracts_dir / f"{kind}.schema.json"


@cache
def _validator(kind: str, contracts_dir: Path = CONTRACTS_DIR) -> Any:
    if kind not in KINDS:
        raise ValueError(f"unknown contract '{kind}'; known: {', '.join(KINDS)}")
    schema = json.loads(schema_path(kind, contracts_dir).read_text())
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _dotted(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts)


def validator(kind: str) -> Any:
    """The compiled validator of contract `kind` (`.is_valid(obj)` is the fast check)."""
    return _validator(kind)


def errors(kind: str, obj: Any) -> list[tuple[str, str]]:
    """Every (field path, reason) on which `obj` breaks contract `kind`; empty when valid."""
    validator = _validator(kind)
    if validator.is_valid(obj):
        return []
    found = [_describe(e) for e in validator.iter_errors(obj)]
    # The deepest path first: "host.id is null" says more than "host is invalid".
    found.sort(key=lambda item: -item[0].count(".") - bool(item[0]))
    return found


# Shared definitions whose raw error (a regex, an anyOf) would not help a person.
_EXPECTED = {
    "timestamp": "an RFC 3339 UTC timestamp such as 2026-12-03T08:00:00.123456Z",
    "ip": "an IPv4 or IPv6 address",
}


def _describe(error: Any) -> tuple[str, str]:
    parts = list(error.instance_path)
    kinds = jsonschema_rs.ValidationErrorKind
    if isinstance(error.kind, kinds.Required):
        # Name the missing field itself, not the object that lacks it.
        return _dotted([*parts, error.kind.property]), "required field is missing"
    got = json.dumps(error.instance)[:80]
    if isinstance(error.kind, kinds.Enum):
        return _dotted(parts), f"{got} is not one of: {', '.join(map(str, error.kind.options))}"
    schema_path = list(error.schema_path)
    for i, part in enumerate(schema_path[:-1]):
        if part == "$defs" and schema_path[i + 1] in _EXPECTED:
            return _dotted(parts), f"expected {_EXPECTED[schema_path[i + 1]]}, got {got}"
    return _dotted(parts), error.message


def validate(kind: str, obj: Any) -> None:
    """Raise ContractError naming the first failing field unless `obj` satisfies contract `kind`."""
    validator = _validator(kind)
    if validator.is_valid(obj):  # the fast path: no error objects built
        return
    path, reason = errors(kind, obj)[0]
    raise ContractError(kind, path, reason)


def kind_of(obj: Any, default: str | None = None) -> str | None:
    """The contract a message names in its `schema` field, else `default`."""
    if isinstance(obj, dict):
        found = SCHEMA_IDS.get(obj.get("schema"))  # type: ignore[arg-type]
        if found:
            return found
    return default


def iter_jsonl_errors(
    path: Path, kind: str | None = None
) -> Iterator[tuple[int, LineError | None]]:
    """For each non-blank line of a JSON Lines file: (line number, None or its first error)."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, LineError(number, "", f"not JSON: {exc}")
                continue
            line_kind = kind or kind_of(obj)
            if line_kind is None:
                yield (
                    number,
                    LineError(
                        number, "schema", "no known contract in 'schema' (use --kind to force one)"
                    ),
                )
                continue
            try:
                validate(line_kind, obj)
            except ContractError as exc:
                yield number, LineError(number, exc.path, exc.reason)
                continue
            yield number, None


def validate_jsonl(
    path: Path, kind: str | None = None, max_errors: int | None = None
) -> FileReport:
    """Validate a JSON Lines file; the report keeps every bad line (up to `max_errors`)."""
    report = FileReport(path)
    for _, error in iter_jsonl_errors(path, kind):
        report.lines += 1
        if error is None:
            report.valid += 1
            continue
        report.bad += 1
        if max_errors is None or len(report.errors) < max_errors:
            report.errors.append(error)
    return report
