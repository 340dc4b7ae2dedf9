"""The native fast path decides an evaluation only when Rhai would give the same (empty)
result: random rules from the fast path's subset, mixed with what only Rhai runs, and random
events, evaluated with and without it, must give identical matches, failures and counters.

The rules put each condition both in front of an alert (`if C { emit(...) }`: a condition
wrongly judged false would lose the alert) and in front of a `return` before an alert (`if C
{ return; } emit(...)`: wrongly judged true would lose it), so any disagreement with Rhai on a
value, a type or an error shows up as a difference."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from sentinel_rhai import BatchResult, RuleCompileError, RuleEngine

from agents.scenarios import generate
from sentinel.rules import load_pack
from sentinel.rules.testkit import expand_events
from sentinel.settings import PROJECT_ROOT

# A typed grammar (strings, integers, floats, conditions), so most rules evaluate to a value,
# plus an untyped one whose values are often of the wrong type, to cover error paths.
GRAMMAR: dict[str, list[str]] = {
    "str": [
        "event.a.s",
        "event.a.t",
        "x0",
        '"x"',
        '"x.y"',
        '""',
        '"X"',
        '"10.0.0.1"',
        "{str}.to_upper()",
        "{str}.to_lower()",
        '{str}.split(".")[0]',
        '{str}.split(".")[1]',
        '{str}.split("x.")[0]',
        "({str} + {str})",
        '({str} + "." + {str})',
        "{int}.to_string()",
        '({str} ?? "d")',
        "(event.a.missing ?? {str})",
        "(if {cond} {{ {str} }} else {{ {str} }})",
    ],
    "int": [
        "event.a.n",
        "x1",
        "0",
        "2",
        "-1",
        "{str}.len()",
        '{str}.split(".").len()',
        '{str}.split("/").len()',
        "({int} + {int})",
        "({int} + {int} + {int})",
        "({int} - {int})",
        "window_count({str}, 60)",
        "window_count({any}, 2.5)",
        "window_distinct({str}, {any}, 30)",
        "window_distinct({any}, {str}, 0)",
    ],
    "float": ["event.a.f", "2.5", "entropy({str})"],
    "cond": [
        "{str} == {str}",
        "{str} != {str}",
        "{str} < {str}",
        "{str} >= {str}",
        "{int} == {int}",
        "{int} != {int}",
        "{int} < {int}",
        "{int} <= {int}",
        "{int} > {int}",
        "{int} >= {int}",
        "{float} > {float}",
        "{float} <= {float}",
        '{str} in ["x", "y", "X"]',
        "{int} in [1, 2, -1]",
        '{str} in {str}.split(".")',
        '{int} in {str}.split(".")',
        '{str} in [2.5, "x"]',
        "!({cond})",
        "({cond}) && ({cond})",
        "({cond}) || ({cond})",
        'glob({str}, "x*")',
        're_match({str}, "^[xX]")',
        'in_list({str}, "known")',
        'in_list({int}, "known")',
        'enrich("ip", {str}) != ()',
        'enrich("ip", {str}).rep == "bad"',
        'enrich("ip", {any}) == ()',
        'enrich("ip", {int}).rep == 2',
        '(enrich("ip", {str}) ?? #{{}}).rep != ()',
        'cidr({str}, "10.0.0.0/8")',
        '{str}.contains("x")',
        '{str}.starts_with("x")',
        '{str}.ends_with("y")',
        "event.a.b",
        "{wild}",
    ],
    "wild": [
        "{any} == {any}",
        "{any} != {any}",
        "{any} < {any}",
        "{any} in {any}",
        '{any} in ["x", 1, ()]',
        '{any} in {str}.split(".")',
        '({any} + "." + {any}) == "x.y"',
        "{any}",
        '{any}.contains("x")',
        'glob({any}, "x*")',
        "entropy({any}) > 1.0",
        '{any}.split(".")[1] == "y"',
        "({any} + {any}) == ({any} - {any})",
    ],
}
ANY = [
    "event.a.s",
    "event.a.n",
    "event.a.f",
    "event.a.b",
    "event.a.l",
    "event.a.missing",
    "event.b",
    "event.a",
    "event.a.l[0]",
    '"x"',
    "2",
    "2.5",
    "true",
    "()",
    '["x", "y"]',
    "[1, 2]",
    '["x", 1, ()]',
]


@st.composite
def grammar(draw: st.DrawFn, symbol: str, depth: int = 0) -> str:
    if symbol == "any":
        return draw(st.sampled_from(ANY))
    options = GRAMMAR[symbol]
    # Deep down, only the leaves (options without a placeholder), so rules stay small.
    if depth >= 3:
        options = [o for o in options if "{" not in o.replace("{{", "")] or options[:1]
    template = draw(st.sampled_from(options))
    out = []
    rest = template
    while True:
        at = rest.find("{")
        while at != -1 and rest.startswith("{{", at):
            out.append(rest[: at + 2])
            rest = rest[at + 2 :]
            at = rest.find("{")
        if at == -1:
            out.append(rest)
            break
        close = rest.index("}", at)
        out.append(rest[:at])
        out.append(draw(grammar(rest[at + 1 : close], depth + 1)))
        rest = rest[close + 1 :]
    return "".join(out).replace("{{", "{").replace("}}", "}")


@st.composite
def statements(draw: st.DrawFn, depth: int = 0) -> str:
    c = draw(grammar("cond"))
    v = draw(grammar("str"))
    choices = [
        f"if {c} {{ return; }}",
        f"if {c} {{ emit(#{{context: #{{v: {v}}}}}); }}",
        f"if {c} {{ emit(); return; }}",
        f"let x1 = {draw(grammar('int'))};",
        f"x0 = {v};",
        f"x1 = {draw(grammar('int'))};",
        "x1 = x1 + 1;",
        f"{v};",
        f"window_push({v});",
        f"window_push({draw(grammar('int'))});",
    ]
    if depth < 2:
        inner = draw(statements(depth + 1))
        other = draw(statements(depth + 1))
        n = draw(grammar("int"))
        choices += [
            f"if {c} {{ {inner} }} else {{ {other} }}",
            f"{{ {inner} }}",
            f"for i in 0..{n} {{ {inner} }}",
            f'for i in -1..={n} {{ x0 = x0 + "."; {inner} }}',
        ]
    return draw(st.sampled_from(choices))


@st.composite
def rules(draw: st.DrawFn) -> str:
    # x0 (a string) and x1 (an integer) are not defined yet here.
    first = draw(grammar("str").filter(lambda e: "x0" not in e and "x1" not in e))
    second = draw(grammar("int").filter(lambda e: "x1" not in e))
    prefix = f"let x0 = {first}; let x1 = {second};"
    # A leading guard on an event field, which the engine may decide before running the rule.
    guard = draw(st.sampled_from(["", "event.a.s", "event.a.t", "event.b", "event.a.l", "event.a"]))
    if guard:
        text = draw(st.sampled_from(["x", "", "10.0.0.1"]))
        prefix = f'if {guard} != "{text}" {{ return; }} {prefix}'
    c = draw(grammar("cond"))
    shape = draw(st.integers(0, 4))
    if shape == 0:  # the alert depends on this one condition being judged true
        return f"{prefix} if {c} {{ emit(); }}"
    if shape == 1:  # ... or false
        return f"{prefix} if {c} {{ return; }} emit();"
    if shape == 2:
        return f"{prefix} if {c} {{ }} else {{ emit(); }}"
    body = " ".join(draw(st.lists(statements(), min_size=1, max_size=4)))
    tail = draw(st.sampled_from(["", "emit();", 'emit(#{title: "end"});']))
    return f"{prefix} {body} {tail}"


field_values = (
    st.sampled_from(["x", "y", "xy", "x.y", "X.Y", "", "10.0.0.1", "a.b.c", "ÿß"])
    | st.integers(-3, 3)
    | st.floats(-3, 3, allow_nan=False)
    | st.booleans()
    | st.none()
    | st.lists(st.sampled_from(["x", "y", 1]), max_size=3)
    | st.dictionaries(st.sampled_from(["s", "k"]), st.sampled_from(["x", 1]), max_size=2)
)


strings = st.sampled_from(["x", "y", "xy", "x.y", "X.Y", "", "10.0.0.1", "a.b.c", "ÿß"])
# Each field mostly has its usual type (so conditions often evaluate rather than fail).
typed_fields = {
    "s": strings,
    "t": strings,
    "n": st.integers(-3, 3),
    "f": st.floats(-3, 3, allow_nan=False),
    "b": st.booleans(),
    "l": st.lists(strings, max_size=3),
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fields = {}
    for name, usual in typed_fields.items():
        roll = draw(st.integers(0, 9))
        if roll < 7:
            fields[name] = draw(usual)
        elif roll < 9:
            fields[name] = draw(field_values)
    event: dict[str, Any] = {"kind": "t", "a": fields}
    # Windows run on event time: mostly valid and moving on, sometimes missing or invalid.
    roll = draw(st.integers(0, 9))
    if roll < 8:
        event["ts"] = f"2026-12-03T08:00:{draw(st.integers(0, 59)):02d}Z"
    elif roll == 8:
        event["ts"] = draw(st.sampled_from(["soon", 7]))
    if draw(st.booleans()):
        event["b"] = draw(field_values)
    if draw(st.integers(0, 9)) == 0:
        event["a"] = draw(field_values)
    return event


def engine(fast_path: bool) -> RuleEngine:
    e = RuleEngine(fast_path=fast_path)
    e.set_list("known", ["x", "2", "true"])
    e.set_enrichment("ip", {"x": {"rep": "bad"}, "10.0.0.1": {"rep": "ok"}, "2": {"rep": 2}})
    return e


def summary(result: BatchResult) -> tuple[Any, ...]:
    return (
        result.events,
        [(m.rule_id, m.event_index, json.dumps(m.alert, sort_keys=True)) for m in result.matches],
        # Where a wall-clock deadline stops a rule depends on timing, not on the fast path.
        [
            (f.rule_id, f.event_index, f.kind, f.message)
            + (() if "deadline_ms" in f.message else (f.line, f.column))
            for f in result.failures
        ],
        [(p.event_index, p.message) for p in result.parse_errors],
    )


def counters(e: RuleEngine) -> dict[str, tuple[int, int, int]]:
    return {k: (s["evals"], s["matches"], s["failures"]) for k, s in e.stats().items()}


@given(st.lists(rules(), min_size=1, max_size=4), st.lists(events(), min_size=1, max_size=12))
def test_fuzz_random_rules_agree_with_and_without_the_fast_path(
    sources: list[str], batch: list[dict[str, Any]]
) -> None:
    fast, slow = engine(True), engine(False)
    specs = [
        {"id": f"r{i}", "source": s, "capabilities": ["enrich"]} for i, s in enumerate(sources)
    ]
    try:
        slow.replace_all(specs)
    except RuleCompileError:
        assume(False)
    fast.replace_all(specs)
    data = b"\n".join(orjson.dumps(e) for e in batch)
    assert summary(fast.evaluate_jsonl(data)) == summary(slow.evaluate_jsonl(data))
    # The list path too (events converted from Python objects, not parsed from JSON).
    assert summary(fast.evaluate(batch)) == summary(slow.evaluate(batch))
    assert counters(fast) == counters(slow)


def test_a_wrong_native_verdict_would_be_caught() -> None:
    """The property above can fail: these rules alert only if a comparison is decided right."""
    batch = [{"kind": "t", "a": {"s": "x", "n": 2}}]
    data = b"\n".join(orjson.dumps(e) for e in batch)
    sources = [
        'if event.a.s != "y" { emit(); }',
        'if event.a.s != "x" { return; } emit();',
        "if event.a.n >= 2 && !(event.a.n in [1, 3]) { emit(); }",
    ]
    fast = engine(True)
    fast.replace_all([{"id": f"r{i}", "source": s} for i, s in enumerate(sources)])
    result = fast.evaluate_jsonl(data)
    assert sorted(m.rule_id for m in result.matches) == ["r0", "r1", "r2"]
    # r0 and r2 ran in Rhai (to emit); r1's guard was decided natively, then Rhai emitted.
    assert fast.stats()["r0"]["native"] == 0
    quiet = fast.evaluate_jsonl(orjson.dumps({"kind": "t", "a": {"s": "y", "n": 1}}))
    assert quiet.matches == []
    assert sum(s["native"] for s in fast.stats().values()) == 3


@pytest.fixture(scope="module")
def replay() -> bytes:
    """Replayed scenarios with attacks, plus every core golden-test event."""
    lines = [orjson.dumps(e) for e in generate("mixed", 20_000, seed=7)]
    for path in sorted((PROJECT_ROOT / "rules" / "core" / "tests").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for number, case in enumerate(doc["cases"]):
            expanded = expand_events(case["events"], doc.get("defaults") or {}, f"{number}")
            lines += [orjson.dumps(e) for e in expanded]
    return b"\n".join(lines)


def test_the_core_pack_gives_the_same_alerts_with_and_without_the_fast_path(
    replay: bytes,
) -> None:
    pack = load_pack(PROJECT_ROOT / "rules" / "core")
    engines = []
    for fast_path in (True, False):
        e = RuleEngine(fast_path=fast_path)
        e.replace_all(pack.engine_specs())
        for name, values in pack.lists.items():
            e.set_list(name, values)
        e.set_enrichment("ip", {"203.0.113.7": {"reputation": "malicious", "feed": "t"}})
        engines.append(e)
    fast, slow = engines
    results = [summary(e.evaluate_jsonl(replay)) for e in engines]
    assert results[0] == results[1]
    assert len(results[0][1]) > 50, "the replay raises alerts"
    assert counters(fast) == counters(slow)
    native = sum(s["native"] for s in fast.stats().values())
    evals = sum(s["evals"] for s in fast.stats().values())
    assert native > evals // 2, f"most evaluations are decided natively: {native} of {evals}"
