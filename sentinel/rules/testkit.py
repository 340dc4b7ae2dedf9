"""Golden tests for rule packs: `rules/<pack>/tests/*.yaml` run through the real engine.

A test file names one rule and lists cases; each case feeds events (contract-shaped, with
defaults filled in) to a fresh engine holding that rule and compares the alerts it emitted with
the expected ones. A case with `expect: []` is a near miss that must not fire.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sentinel.contracts import ContractError, validate
from sentinel.rules.pack import Pack, PackError, load_pack

BASE_TIME = datetime(2026, 12, 1, tzinfo=UTC)
DEFAULT_HOST = {"id": "h-test", "name": "test-1", "os": "linux"}
_TEMPLATE = re.compile(r"\{i(?:\s*([+*])\s*(\d+))?\}")


@dataclass
class CaseResult:
    file: Path
    rule_id: str
    name: str
    passed: bool
    expected: list[dict[str, Any]] = field(default_factory=list)
    actual: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def diff(self) -> str:
        want = yaml.safe_dump(self.expected, sort_keys=True, default_flow_style=False)
        got = yaml.safe_dump(self.actual, sort_keys=True, default_flow_style=False)
        lines = difflib.unified_diff(
            want.splitlines(), got.splitlines(), "expected", "actual", lineterm="", n=20
        )
        return "\n".join([*self.problems, *lines])


@dataclass
class SuiteResult:
    pack: Pack
    cases: list[CaseResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that could not run at all

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def _render(value: Any, i: int) -> Any:
    """Substitute `{i}`, `{i+N}`, `{i*N}` in strings; a string that is only a template becomes an int."""
    if isinstance(value, dict):
        return {k: _render(v, i) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, i) for v in value]
    if not isinstance(value, str) or "{i" not in value:
        return value

    def number(m: re.Match[str]) -> int:
        op, arg = m.group(1), m.group(2)
        return i + int(arg) if op == "+" else i * int(arg) if op == "*" else i

    whole = _TEMPLATE.fullmatch(value)
    if whole:
        return number(whole)
    return _TEMPLATE.sub(lambda m: str(number(m)), value)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand_events(
    raw: list[dict[str, Any]], defaults: dict[str, Any], case: str
) -> list[dict[str, Any]]:
    """Turn a case's compact events into full contract events, in order.

    `t` is seconds after BASE_TIME (default: one second after the previous event); `repeat: N`
    with `every: S` makes N copies S seconds apart, with `{i}` templates numbered 0..N-1.
    """
    events: list[dict[str, Any]] = []
    t = -1.0
    for spec in raw:
        spec = dict(spec)
        repeat = int(spec.pop("repeat", 1))
        every = float(spec.pop("every", 1))
        start = float(spec.pop("t", t + 1))
        for i in range(repeat):
            t = start + i * every
            body = _render(spec, i)
            event = _merge(
                {
                    "schema": "sentinel.event/1",
                    "host": DEFAULT_HOST,
                    "ts": (BASE_TIME + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                },
                _merge(defaults, body),
            )
            event.setdefault("id", f"{case}-{len(events):04d}")
            events.append(event)
    return events


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


def _view(alert: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """The part of an alert a diff should show: the keys the test mentions, plus the basics."""
    shown = {"title", "severity", "context", "dedup"} | keys
    return {k: alert[k] for k in sorted(shown) if k in alert}


def run_file(pack: Pack, path: Path, engine_factory: Any) -> list[CaseResult]:
    doc = yaml.safe_load(path.read_text()) or {}
    rule_id = doc.get("rule")
    if not rule_id:
        raise PackError(f"{path}: missing 'rule' (the id of the rule under test)")
    try:
        rule = pack.rule(rule_id)
    except KeyError:
        raise PackError(f"{path}: rule '{rule_id}' is not in pack '{pack.name}'") from None
    defaults = doc.get("defaults") or {}
    from sentinel_rhai import RuleError

    try:  # compile once up front: a rule that does not compile fails the whole file
        engine_factory().replace_all([rule.engine_spec(pack)])
    except RuleError as exc:
        raise PackError(f"{path}: {exc}") from None
    results: list[CaseResult] = []
    for number, case in enumerate(doc.get("cases") or [], start=1):
        name = str(case.get("name", f"case {number}"))
        expected = list(case.get("expect") or [])
        result = CaseResult(path, rule_id, name, passed=False)
        try:
            events = expand_events(case.get("events") or [], defaults, f"{path.stem}-{number}")
        except (TypeError, ValueError) as exc:
            result.problems.append(f"bad events: {exc}")
            results.append(result)
            continue
        for index, event in enumerate(events):
            try:
                validate("event", event)
            except ContractError as exc:
                result.problems.append(f"test event {index} breaks the event contract: {exc}")
        engine = engine_factory()
        engine.replace_all([rule.engine_spec(pack)])
        for list_name, values in pack.lists.items():
            engine.set_list(list_name, values)
        for kind, table in {
            **(doc.get("enrichment") or {}),
            **(case.get("enrichment") or {}),
        }.items():
            engine.set_enrichment(kind, table)
        batch = engine.evaluate(events)
        for failure in batch.failures:
            result.problems.append(
                f"rule failed on event {failure.event_index} ({failure.kind}): {failure.message}"
            )
        alerts = [m.alert for m in batch.matches if m.rule_id == rule_id]
        mentioned = {k for e in expected for k in e if k != "count"}
        result.actual = [_view(a, mentioned) for a in alerts]
        result.expected = expected
        ok = not result.problems
        want_total = sum(int(e.get("count", 1)) for e in expected)
        if len(alerts) != want_total:
            ok = False
            result.problems.append(
                f"expected {want_total} alert(s), the rule emitted {len(alerts)}"
            )
        for e in expected:
            fields = {k: v for k, v in e.items() if k != "count"}
            hits = sum(_subset(fields, a) for a in alerts)
            if hits != int(e.get("count", 1)):
                ok = False
                result.problems.append(
                    f"expected {e.get('count', 1)} alert(s) with {fields}, found {hits}"
                )
        result.passed = ok
        results.append(result)
    return results


def run_pack_tests(path: Path, pattern: str | None = None) -> SuiteResult:
    """Run every golden test file of the pack at `path` (optionally only names matching `pattern`)."""
    from sentinel_rhai import RuleEngine

    pack = load_pack(path)
    suite = SuiteResult(pack)
    files = sorted((path / "tests").glob("*.yaml"))
    if not files:
        suite.errors.append(f"{path}/tests: no golden tests (*.yaml)")
    for file in files:
        try:
            cases = run_file(pack, file, RuleEngine)
        except (PackError, yaml.YAMLError) as exc:
            suite.errors.append(str(exc))
            continue
        suite.cases += [c for c in cases if not pattern or pattern in f"{c.rule_id} {c.name}"]
    return suite


def lint_pack(path: Path) -> list[str]:
    """Problems with a pack: manifest, compilation (rule id, line, column), and test coverage."""
    from sentinel_rhai import RuleCompileError, RuleEngine, RuleError

    try:
        pack = load_pack(path)
    except PackError as exc:
        return [str(exc)]
    problems: list[str] = []
    for rule in pack.rules:
        try:
            specs: list[Any] = [rule.engine_spec(pack)]
            RuleEngine().replace_all(specs)
        except RuleCompileError as exc:
            problems.append(f"{path / rule.file}: {exc}")
        except RuleError as exc:
            problems.append(f"{path / rule.file}: {exc}")
    covered: dict[str, tuple[int, int]] = {}
    for file in sorted((path / "tests").glob("*.yaml")):
        try:
            doc = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            problems.append(f"{file}: not valid YAML: {exc}")
            continue
        firing = sum(bool(c.get("expect")) for c in doc.get("cases") or [])
        quiet = sum(not c.get("expect") for c in doc.get("cases") or [])
        old = covered.get(str(doc.get("rule")), (0, 0))
        covered[str(doc.get("rule"))] = (old[0] + firing, old[1] + quiet)
    for rule in pack.rules:
        firing, quiet = covered.get(rule.id, (0, 0))
        if not firing:
            problems.append(f"{path}: rule '{rule.id}' has no golden case that fires")
        if not quiet:
            problems.append(f"{path}: rule '{rule.id}' has no near-miss case (expect: [])")
        if not rule.mitre:
            problems.append(f"{path}: rule '{rule.id}' names no MITRE technique")
    return problems
