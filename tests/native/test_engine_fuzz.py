"""Property tests: random events, random bytes and random rule sources never crash the
engine; every call returns a well-formed BatchResult or raises a RuleError.
`make fuzz` runs these with the larger "fuzz" hypothesis profile."""

from __future__ import annotations

import json
from typing import Any

import sentinel_rhai
from hypothesis import given
from hypothesis import strategies as st
from sentinel_rhai import Limits, RuleEngine, RuleError

from .helpers import make_event

FAILURE_KINDS = {"limit", "runtime", "capability", "panic"}

# Fuzzed rules get tight limits so a runaway example costs milliseconds, not seconds.
FUZZ_LIMITS = Limits(
    max_operations=5_000,
    deadline_ms=20,
    max_string_size=4096,
    max_array_size=256,
    max_map_size=256,
    max_window_keys=16,
    max_window_entries_per_key=16,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
kinds = st.sampled_from(["proc", "net", "dns", "auth", "file", "other"])
timestamps = st.sampled_from(
    ["2026-12-03T08:00:00Z", "2026-12-03T08:00:30.5+01:00", "not a time", ""]
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Contract-shaped events with random extra fields and random values where rules look."""
    kind = draw(kinds)
    event = make_event(kind, ts=draw(timestamps))
    body = event.get(kind, {})
    for key in draw(
        st.lists(
            st.sampled_from(["exe", "user", "dst_ip", "query", "src_ip", "path", "pid"]), max_size=3
        )
    ):
        body[key] = draw(json_values)
    event.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
    if draw(st.booleans()):
        event["kind"] = draw(json_values)
    return event


# Rule sources from a small grammar of the script API, plus random damage, so most
# examples compile and reach evaluation.
values = st.sampled_from(
    [
        "event.kind",
        "event.proc.exe",
        "event.host.id",
        "event.net.dst_ip",
        "event.dns.query",
        "event.auth.src_ip",
        "event",
        "1",
        "-7",
        "2.5",
        '"x"',
        '"10.0.0.0/8"',
        "[1, 2]",
        "#{a: 1}",
        "()",
        "true",
        "x",
        "event.nope.deeper",
    ]
)
calls = st.sampled_from(
    [
        'glob({v}, "*a*")',
        're_match({v}, "^(a|b)+$")',
        're_match({v}, "(")',
        'cidr({v}, "10.0.0.0/8")',
        'cidr({v}, "::/0")',
        'cidr({v}, "bad")',
        'in_list({v}, "known")',
        'in_list({v}, "missing")',
        "entropy({v})",
        'enrich("host", {v})',
        "window_push({v})",
        "window_count({v}, 60)",
        "window_distinct({v}, {v}, 30)",
        "emit(#{{title: {v}}})",
        "emit()",
        "{v}.len()",
        "type_of({v})",
        "{v} + {v}",
        "{v} == {v}",
        "!{v}",
    ]
)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    template = draw(calls)
    return template.format(v=draw(values)) if "{v}" in template else template


def compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Statements built from smaller ones: blocks, loops, functions, sequences."""
    return st.one_of(
        st.builds(lambda e, s: f"if {e} {{ {s} }}", expressions(), inner),
        st.builds(lambda n, s: f"for i in 0..{n} {{ {s} }}", st.integers(-2, 50), inner),
        st.builds(lambda s: f"loop {{ {s} }}", inner),
        st.builds(lambda s: f"fn f(a) {{ {s} f(a) }} f(1);", inner),
        st.builds(lambda a, b: f"{a} {b}", inner, inner),
        st.builds(lambda s: f"try {{ {s} }} catch (e) {{ emit(); }}", inner),
    )


statements = st.recursive(
    st.builds(lambda e: f"{e};", expressions()) | st.builds(lambda v: f"let x = {v};", values),
    compound,
    max_leaves=6,
)


@st.composite
def damaged(draw: st.DrawFn, source: str) -> str:
    """Delete or insert a character somewhere, to exercise compile errors and positions."""
    if not source or not draw(st.booleans()):
        return source
    at = draw(st.integers(0, len(source) - 1))
    if draw(st.booleans()):
        return source[:at] + source[at + 1 :]
    return source[:at] + draw(st.sampled_from(list("{}()[];\"'`#.,$\\\n"))) + source[at:]


rule_sources = statements.flatmap(damaged) | st.text(max_size=80)


def check_result(result: sentinel_rhai.BatchResult, rule_ids: set[str], lines: int) -> None:
    assert isinstance(result, sentinel_rhai.BatchResult)
    assert result.events + len(result.parse_errors) <= lines
    for m in result.matches:
        assert m.rule_id in rule_ids
        assert 0 <= m.event_index < lines
        assert m.alert["rule_id"] == m.rule_id
        assert {"title", "severity", "context", "dedup"} <= m.alert.keys()
        json.dumps(m.alert)
    for f in result.failures:
        assert f.rule_id in rule_ids
        assert f.kind in FAILURE_KINDS - {"panic"}, f
        assert 0 <= f.event_index < lines
        assert f.message
    for p in result.parse_errors:
        assert 0 <= p.event_index < lines
        assert p.message


def fuzz_engine() -> RuleEngine:
    engine = RuleEngine(FUZZ_LIMITS)
    engine.set_list("known", ["a", "10.0.0.1", "h-017"])
    engine.set_enrichment("host", {"h-017": {"owner": "web"}})
    return engine


@given(st.lists(events(), max_size=8))
def test_fuzz_random_events_never_crash_the_engine(batch: list[dict[str, Any]]) -> None:
    engine = fuzz_engine()
    engine.replace_all(
        [
            {
                "id": "curl",
                "source": 'if glob(event.proc.exe, "*curl*") { emit(#{context: #{e: event.proc}}); }',
            },
            {
                "id": "net",
                "source": 'if cidr(event.net.dst_ip, "10.0.0.0/8") || in_list(event.net.dst_ip, "known") { emit(); }',
            },
            {
                "id": "dns",
                "source": "if entropy(event.dns.query) > 3.0 { emit(); }",
                "kinds": ["dns"],
            },
            {
                "id": "win",
                "source": "window_push(event.host.id); if window_distinct(event.host.id, event.kind, 60) > 1 { emit(); }",
            },
            {
                "id": "enr",
                "source": 'let m = enrich("host", event.host.id); if m != () { emit(#{context: m}); }',
                "capabilities": ["enrich"],
            },
            {"id": "all", "source": "emit(#{context: #{event: event}});"},
        ]
    )
    rule_ids = {r.id for r in engine.rules()}
    data = "\n".join(json.dumps(e) for e in batch).encode()
    as_lines = engine.evaluate_jsonl(data)
    check_result(as_lines, rule_ids, max(len(batch), 1))
    assert as_lines.events == len(batch)
    assert [m.event_index for m in as_lines.matches if m.rule_id == "all"] == list(
        range(len(batch))
    )
    as_dicts = engine.evaluate(batch)
    check_result(as_dicts, rule_ids, max(len(batch), 1))
    assert as_dicts.events == len(batch)


@given(st.binary(max_size=400))
def test_fuzz_random_bytes_are_events_or_parse_errors(data: bytes) -> None:
    engine = fuzz_engine()
    engine.load("all", "emit();")
    result = engine.evaluate_jsonl(data)
    lines = data.split(b"\n")
    non_blank = [i for i, line in enumerate(lines) if line.strip(b" \t\r")]  # JSON whitespace
    check_result(result, {"all"}, len(lines))
    assert result.events + len(result.parse_errors) == len(non_blank)
    seen = sorted(
        [p.event_index for p in result.parse_errors] + [m.event_index for m in result.matches]
    )
    assert seen == non_blank


@given(
    st.lists(rule_sources, min_size=1, max_size=4),
    st.lists(events(), min_size=1, max_size=4),
    st.booleans(),
)
def test_fuzz_random_rules_compile_or_raise_and_then_evaluate(
    sources: list[str], batch: list[dict[str, Any]], can_enrich: bool
) -> None:
    engine = fuzz_engine()
    loaded: set[str] = set()
    for i, source in enumerate(sources):
        try:
            rule = engine.load(f"r{i}", source, capabilities=["enrich"] if can_enrich else [])
        except RuleError as err:
            assert err.rule_id == f"r{i}"
            assert isinstance(err, sentinel_rhai.RuleCompileError), err
            assert err.line is None or err.line >= 1
        else:
            assert rule.id == f"r{i}"
            loaded.add(rule.id)
    assert {r.id for r in engine.rules()} == loaded
    data = "\n".join(json.dumps(e) for e in batch).encode()
    result = engine.evaluate_jsonl(data)
    check_result(result, loaded, len(batch))
    assert result.events == len(batch)
    stats = engine.stats()
    for rule_id in loaded:
        counts = stats[rule_id]
        assert counts["evals"] == len(batch)  # no kinds: every event
        assert counts["failures"] == sum(1 for f in result.failures if f.rule_id == rule_id)
        assert counts["matches"] == sum(1 for m in result.matches if m.rule_id == rule_id)


@given(rule_sources)
def test_fuzz_replace_all_is_atomic(source: str) -> None:
    engine = fuzz_engine()
    engine.load("stable", "emit();")
    try:
        engine.replace_all([{"id": "new", "source": source}, {"id": "also", "source": "emit();"}])
    except RuleError:
        assert [r.id for r in engine.rules()] == ["stable"]
    else:
        assert [r.id for r in engine.rules()] == ["new", "also"]
    assert engine.evaluate_jsonl(json.dumps(make_event()).encode()).events == 1
