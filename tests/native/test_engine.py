"""The native Rhai rule engine through its Python API: loading, sandbox limits, script
functions, windows, hot reload, and batch results."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sentinel_rhai
from sentinel_rhai import Limits, RuleCompileError, RuleEngine, RuleError, RuleLimitError

from .helpers import jsonl, make_event

CURL_RULE = 'if event.proc.exe == "/usr/bin/curl" { emit(#{context: #{pid: event.proc.pid}}); }'


def matched(result: sentinel_rhai.BatchResult) -> list[tuple[str, int]]:
    return [(m.rule_id, m.event_index) for m in result.matches]


# --- module surface ---------------------------------------------------------------------


def test_package_exports_the_documented_api() -> None:
    for name in [
        "RuleEngine",
        "Limits",
        "Rule",
        "BatchResult",
        "Match",
        "Failure",
        "ParseFailure",
        "RuleError",
        "RuleCompileError",
        "RuleLimitError",
    ]:
        assert hasattr(sentinel_rhai, name), name
    assert issubclass(RuleCompileError, RuleError)
    assert issubclass(RuleLimitError, RuleError)
    assert issubclass(RuleError, Exception)
    assert sentinel_rhai.CAPABILITIES == ["enrich"]
    assert sentinel_rhai.__version__ == "0.1.0"


# --- Limits -----------------------------------------------------------------------------


def test_limits_have_defaults_and_keyword_overrides() -> None:
    default = Limits()
    assert default.max_operations == 100_000
    assert default.deadline_ms == 25
    custom = Limits(max_operations=500, deadline_ms=5)
    assert (custom.max_operations, custom.deadline_ms) == (500, 5)
    assert custom.max_call_levels == default.max_call_levels
    assert Limits(max_operations=500, deadline_ms=5) == custom
    assert hash(Limits()) == hash(default)
    assert "max_operations=500" in repr(custom)


def test_limits_reject_zero_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="max_map_size must be at least 1"):
        Limits(max_map_size=0)
    with pytest.raises(TypeError):
        Limits(max_bananas=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown limit 'max_bananas'"):
        RuleEngine({"max_bananas": 1})


def test_engine_default_limits_apply_to_rules_without_their_own() -> None:
    engine = RuleEngine(Limits(max_operations=1234))
    assert engine.limits.max_operations == 1234
    rule = engine.load("r", "()")
    assert rule.limits.max_operations == 1234
    own = engine.load("s", "()", limits={"max_operations": 99})
    assert own.limits.max_operations == 99
    assert own.limits.deadline_ms == engine.limits.deadline_ms


# --- load, Rule, compile errors ---------------------------------------------------------


def test_load_returns_the_rule_with_hash_kinds_and_capabilities(engine: RuleEngine) -> None:
    import hashlib

    rule = engine.load(
        "r1",
        CURL_RULE,
        kinds=["proc"],
        capabilities=("enrich",),
        meta={"title": "curl", "version": 3},
    )
    assert rule.id == "r1"
    assert rule.hash == hashlib.sha256(CURL_RULE.encode()).hexdigest()
    assert rule.kinds == ["proc"]
    assert rule.capabilities == ["enrich"]
    assert rule.meta == {"title": "curl", "version": 3}
    assert [r.id for r in engine.rules()] == ["r1"]
    assert len(engine) == 1
    assert engine.load("r2", "()").kinds is None


def test_syntax_error_reports_rule_line_and_column(engine: RuleEngine) -> None:
    source = 'let a = 1;\nif a == 1 {\n    emit(#{title: "x"}\n}'
    with pytest.raises(RuleCompileError) as info:
        engine.load("broken", source)
    err = info.value
    assert err.rule_id == "broken"
    assert (err.line, err.column) == (4, 1)
    assert "rule 'broken' line 4, column 1" in str(err)
    assert err.reason
    assert engine.rules() == []


def test_undefined_variable_is_a_compile_error(engine: RuleEngine) -> None:
    with pytest.raises(RuleCompileError) as info:
        engine.load("typo", 'if evnt.kind == "proc" { emit(); }')
    assert info.value.line == 1
    assert "evnt" in str(info.value)


def test_eval_is_not_available(engine: RuleEngine) -> None:
    with pytest.raises(RuleCompileError):
        engine.load("e", 'eval("emit()")')


def test_import_is_not_available(engine: RuleEngine) -> None:
    with pytest.raises(RuleCompileError):
        engine.load("i", 'import "os" as os;')


def test_too_deep_expression_is_a_compile_error(engine: RuleEngine) -> None:
    source = "let x = " + "(" * 200 + "1" + ")" * 200 + ";"
    with pytest.raises(RuleCompileError):
        engine.load("deep", source)


def test_oversized_source_is_a_limit_error() -> None:
    engine = RuleEngine(Limits(max_source_size=100))
    with pytest.raises(RuleLimitError) as info:
        engine.load("big", "let x = 1;\n" * 20)
    assert info.value.rule_id == "big"
    assert "max_source_size" in str(info.value)


def test_bad_rule_descriptions_are_refused(engine: RuleEngine) -> None:
    with pytest.raises(RuleError, match="unknown capability 'network'"):
        engine.load("r", "()", capabilities=["network"])
    with pytest.raises(RuleError, match="non-empty"):
        engine.load("r", "()", kinds=[])
    with pytest.raises(TypeError):
        engine.load("r", "()", kinds="proc")
    with pytest.raises(RuleError, match="non-empty string"):
        engine.load(" ", "()")


# --- emit and alerts --------------------------------------------------------------------


def test_alert_has_manifest_defaults_overridden_by_emit(engine: RuleEngine) -> None:
    engine.load(
        "curl",
        'emit(#{severity: "critical", context: #{exe: event.proc.exe}, extra: [1, 2.5, true, ()]});',
        meta={"title": "Curl seen", "severity": "low", "version": "1.2.0", "mitre": ["T1105"]},
    )
    engine.load("plain", "emit();")
    result = engine.evaluate_jsonl(jsonl(make_event()))
    by_rule = {m.rule_id: m.alert for m in result.matches}
    assert by_rule["curl"] == {
        "rule_id": "curl",
        "title": "Curl seen",
        "severity": "critical",
        "version": "1.2.0",
        "mitre": ["T1105"],
        "context": {"exe": "/usr/bin/curl"},
        "dedup": None,
        "extra": [1, 2.5, True, None],
    }
    assert by_rule["plain"] == {
        "rule_id": "plain",
        "title": "plain",
        "severity": "medium",
        "context": {},
        "dedup": None,
    }


def test_emit_cannot_change_the_rule_id(engine: RuleEngine) -> None:
    engine.load("real", 'emit(#{rule_id: "spoofed", dedup: event.host.id});')
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    assert match.alert["rule_id"] == "real"
    assert match.alert["dedup"] == "h-017"


def test_too_many_emits_is_a_limit_failure() -> None:
    engine = RuleEngine(Limits(max_emits_per_event=3))
    engine.load("chatty", "for i in 0..10 { emit(); }")
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert result.matches == []
    (failure,) = result.failures
    assert failure.kind == "limit"
    assert "max_emits_per_event" in failure.message


# --- sandbox limits ---------------------------------------------------------------------


def test_infinite_loop_is_stopped_quickly_and_next_rule_still_matches(engine: RuleEngine) -> None:
    engine.load("spin", "while true {}")
    engine.load("curl", CURL_RULE)
    started = time.perf_counter()
    result = engine.evaluate_jsonl(jsonl(make_event(), make_event()))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.2  # two events, each well under 100 ms
    assert [(f.rule_id, f.event_index, f.kind) for f in result.failures] == [
        ("spin", 0, "limit"),
        ("spin", 1, "limit"),
    ]
    assert "max_operations" in result.failures[0].message
    assert (result.failures[0].line, result.failures[0].column) == (1, 12)
    assert matched(result) == [("curl", 0), ("curl", 1)]


def test_deadline_stops_a_rule_that_is_slow_per_operation() -> None:
    engine = RuleEngine(Limits(deadline_ms=5, max_operations=10**12))
    engine.load("slow", 'let s = "x"; s.pad(500000, "y"); loop { let n = s.index_of("z"); }')
    engine.load("after", "emit();")
    started = time.perf_counter()
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert time.perf_counter() - started < 0.1
    (failure,) = result.failures
    assert failure.kind == "limit"
    assert "deadline_ms" in failure.message
    assert matched(result) == [("after", 0)]


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        ("fn f(x) { f(x + 1) } f(0);", "max_call_levels"),
        ('let s = "ab"; loop { s += s; }', "max_string_size"),
        ("let a = [1]; loop { a += a; }", "max_array_size"),
        # Rhai checks a map's size when an operator produces it (`+=`), not on `m[k] = v`;
        # maps grown only by indexing are still bounded by max_operations.
        ("let m = #{}; let i = 0; loop { m += #{}; m[`k${i}`] = i; i += 1; }", "max_map_size"),
    ],
)
def test_blowups_are_stopped_as_limit_failures(source: str, limit: str) -> None:
    # A map grows one key per iteration, so its limit is set low enough to hit before max_operations.
    engine = RuleEngine(Limits(max_map_size=1000))
    engine.load("bad", source)
    engine.load("good", "emit();")
    started = time.perf_counter()
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert time.perf_counter() - started < 0.1
    (failure,) = result.failures
    assert (failure.rule_id, failure.kind) == ("bad", "limit")
    assert limit in failure.message
    assert matched(result) == [("good", 0)]


def test_limit_errors_cannot_be_caught_by_the_script(engine: RuleEngine) -> None:
    engine.load("sneaky", "try { while true {} } catch { emit(); }")
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert result.matches == []
    assert [f.kind for f in result.failures] == ["limit"]


def test_per_rule_limits_override_the_defaults(engine: RuleEngine) -> None:
    engine.load(
        "tight",
        "let n = 0; for i in 0..1000 { n += i; } emit();",
        limits=Limits(max_operations=100),
    )
    engine.load("roomy", "let n = 0; for i in 0..1000 { n += i; } emit();")
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert [f.rule_id for f in result.failures] == ["tight"]
    assert matched(result) == [("roomy", 0)]


def test_runtime_errors_are_failures_with_position(engine: RuleEngine) -> None:
    engine.load("oops", 'let x = 1;\nlet y = x + "a" - 1;')
    (failure,) = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert failure.kind == "runtime"
    assert failure.line == 2
    assert failure.column is not None
    assert "(line" not in failure.message  # position is reported in its own fields


def test_thrown_errors_are_runtime_failures(engine: RuleEngine) -> None:
    engine.load("thrower", 'throw "bad input";')
    (failure,) = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert failure.kind == "runtime"
    assert "bad input" in failure.message


def test_emits_of_a_failing_rule_are_discarded(engine: RuleEngine) -> None:
    engine.load("half", 'emit(); throw "later";')
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert result.matches == []
    assert len(result.failures) == 1


def test_rules_cannot_change_the_event_other_rules_see(engine: RuleEngine) -> None:
    for i, attempt in enumerate(
        [
            'event.proc.exe = "/bin/evil";',
            'event.proc.remove("exe");',
            "event.proc.clear();",
            'event.kind += "x";',
            "event.proc.exe.clear();",
            "event = #{};",
            'let p = event.proc; p.exe = "/bin/evil"; mixin(p, #{});',
        ]
    ):
        engine.load(f"mutate{i}", attempt)
    engine.load("check", CURL_RULE + ' if event.kind == "proc" { emit(#{title: "unchanged"}); }')
    result = engine.evaluate_jsonl(jsonl(make_event()))
    titles = [m.alert["title"] for m in result.matches if m.rule_id == "check"]
    assert titles == ["check", "unchanged"]


def test_print_and_debug_are_silent(engine: RuleEngine, capfd: pytest.CaptureFixture[str]) -> None:
    engine.load("noisy", 'print("to stdout"); debug("to stderr"); emit();')
    assert len(engine.evaluate_jsonl(jsonl(make_event())).matches) == 1
    out, err = capfd.readouterr()
    assert "to stdout" not in out
    assert "to stderr" not in err


# --- batches and parsing ----------------------------------------------------------------


def test_malformed_line_is_a_parse_error_at_its_index(engine: RuleEngine) -> None:
    engine.load("curl", CURL_RULE)
    data = jsonl(make_event(), "{not json", "", "[1, 2]", make_event())
    result = engine.evaluate_jsonl(data)
    assert result.events == 2
    assert [(p.event_index, p.message.split(":")[0]) for p in result.parse_errors] == [
        (1, "invalid JSON"),
        (3, "an event must be a JSON object, not array"),
    ]
    assert matched(result) == [("curl", 0), ("curl", 4)]


def test_blank_lines_are_skipped_but_indices_are_line_numbers(engine: RuleEngine) -> None:
    engine.load("all", "emit();")
    data = b"\n" + jsonl(make_event()) + b"\r\n   \n" + jsonl(make_event()) + b"\n"
    result = engine.evaluate_jsonl(data)
    assert result.events == 2
    assert [m.event_index for m in result.matches] == [1, 3]
    assert result.parse_errors == []


def test_empty_batch(engine: RuleEngine) -> None:
    engine.load("all", "emit();")
    result = engine.evaluate_jsonl(b"")
    assert (result.events, result.matches, result.failures, result.parse_errors) == (0, [], [], [])
    assert "BatchResult(events=0" in repr(result)


def test_evaluate_accepts_dicts(engine: RuleEngine) -> None:
    engine.load("curl", CURL_RULE)
    result = engine.evaluate([make_event(), make_event(exe="/bin/ls"), "nope", {"kind": {1, 2}}])  # type: ignore[list-item]
    assert result.events == 2
    assert matched(result) == [("curl", 0)]
    assert result.matches[0].alert["context"] == {"pid": 4242}
    assert [p.event_index for p in result.parse_errors] == [2, 3]
    assert "not str" in result.parse_errors[0].message or "dict" in result.parse_errors[0].message
    assert "set" in result.parse_errors[1].message


def test_json_values_reach_scripts_with_their_types(engine: RuleEngine) -> None:
    engine.load(
        "types",
        """
        let e = event.proc;
        emit(#{context: #{
            int: type_of(e.pid), float: type_of(e.ratio), big: type_of(e.big),
            bool: type_of(e.flag), none: type_of(e.none), list: type_of(e.args),
            missing: type_of(e.nothing)
        }});
    """,
    )
    event = make_event(ratio=0.5, big=2**64, flag=True, none=None, args=["-s"])
    for result in (engine.evaluate_jsonl(jsonl(event)), engine.evaluate([event])):
        (match,) = result.matches
        assert match.alert["context"] == {
            "int": "i64",
            "float": "f64",
            "big": "f64",
            "bool": "bool",
            "none": "()",
            "list": "array",
            "missing": "()",
        }


def test_evaluate_jsonl_releases_the_gil(engine: RuleEngine) -> None:
    engine.load("work", "let n = 0; for i in 0..2000 { n += i; } if n > 0 { emit(); }")
    data = jsonl(*[make_event() for _ in range(300)])
    ticks = 0
    done = threading.Event()

    def count_ticks() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    ticker = threading.Thread(target=count_ticks)
    ticker.start()
    try:
        started = time.perf_counter()
        result = engine.evaluate_jsonl(data)
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        ticker.join()
    assert len(result.matches) == 300
    # With the GIL held for the whole batch the other thread could not run at all.
    assert elapsed > 0.01
    assert ticks > 10


def test_concurrent_batches_from_threads_are_all_counted(engine: RuleEngine) -> None:
    engine.load("all", "emit();")
    data = jsonl(*[make_event() for _ in range(200)])
    results: list[int] = []

    def run() -> None:
        results.append(len(engine.evaluate_jsonl(data).matches))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert engine.stats()["all"]["evals"] == 800


# --- kinds prefilter --------------------------------------------------------------------


def test_rules_only_see_their_kinds(engine: RuleEngine) -> None:
    engine.load("procs", "emit();", kinds=["proc"])
    engine.load("net_or_dns", "emit();", kinds=["net", "dns"])
    engine.load("everything", "emit();")
    data = jsonl(
        make_event("proc"), make_event("net"), make_event("dns"), make_event("auth"), {"no": "kind"}
    )
    result = engine.evaluate_jsonl(data)
    assert sorted(matched(result)) == sorted(
        [
            ("procs", 0),
            ("everything", 0),
            ("net_or_dns", 1),
            ("everything", 1),
            ("net_or_dns", 2),
            ("everything", 2),
            ("everything", 3),
            ("everything", 4),
        ]
    )
    stats = engine.stats()
    assert (
        stats["procs"]["evals"],
        stats["net_or_dns"]["evals"],
        stats["everything"]["evals"],
    ) == (1, 2, 5)


def test_rules_run_in_load_order_for_an_event(engine: RuleEngine) -> None:
    for rid in ["c", "a", "b"]:
        engine.load(rid, "emit();", kinds=["proc"] if rid != "a" else None)
    assert [m.rule_id for m in engine.evaluate_jsonl(jsonl(make_event())).matches] == [
        "c",
        "a",
        "b",
    ]


# --- script functions -------------------------------------------------------------------


def test_glob(engine: RuleEngine) -> None:
    engine.load(
        "g",
        """
        emit(#{context: #{
            star: glob(event.proc.exe, "/usr/bin/*"), question: glob("curl", "c?rl"),
            class: glob("file7", "file[0-9]"), negated: glob("file7", "file[!0-9]"),
            anchored: glob(event.proc.exe, "bin/*"), missing: glob(event.proc.nope, "*")
        }});
    """,
    )
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    assert match.alert["context"] == {
        "star": True,
        "question": True,
        "class": True,
        "negated": False,
        "anchored": False,
        "missing": False,
    }


def test_re_match(engine: RuleEngine) -> None:
    engine.load(
        "r",
        r"""
        emit(#{context: #{
            search: re_match(event.proc.cmdline, "https?://\\d+\\.\\d+"),
            anchored: re_match(event.proc.cmdline, "^wget"),
            ignore_case: re_match("CURL", "(?i)curl"),
        }});
    """,
    )
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    assert match.alert["context"] == {"search": True, "anchored": False, "ignore_case": True}


def test_re_match_with_a_bad_pattern_is_a_runtime_failure(engine: RuleEngine) -> None:
    engine.load("bad_re", 're_match(event.proc.exe, "(unclosed");')
    engine.load("huge_re", 're_match(event.proc.exe, "(\\\\w{100}){100}");')
    failures = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert [(f.rule_id, f.kind) for f in failures] == [
        ("bad_re", "runtime"),
        ("huge_re", "runtime"),
    ]
    assert "invalid pattern" in failures[0].message


def test_cidr_ipv4_and_ipv6(engine: RuleEngine) -> None:
    engine.load(
        "c",
        """
        emit(#{context: #{
            v4_in: cidr("10.1.2.3", "10.0.0.0/8"), v4_out: cidr("11.1.2.3", "10.0.0.0/8"),
            v4_narrow: cidr("192.168.1.77", "192.168.1.64/26"),
            v6_in: cidr("2001:db8::1", "2001:db8::/32"), v6_out: cidr("2001:db9::1", "2001:db8::/32"),
            mapped: cidr("::ffff:10.0.0.1", "10.0.0.0/8"), mixed: cidr("10.0.0.1", "::/0"),
            not_ip: cidr("banana", "10.0.0.0/8"), event: cidr(event.net.dst_ip, "203.0.113.0/24"),
        }});
    """,
    )
    (match,) = engine.evaluate_jsonl(jsonl(make_event("net"))).matches
    assert match.alert["context"] == {
        "v4_in": True,
        "v4_out": False,
        "v4_narrow": True,
        "v6_in": True,
        "v6_out": False,
        "mapped": True,
        "mixed": False,
        "not_ip": False,
        "event": True,
    }


def test_cidr_with_a_bad_network_is_a_runtime_failure(engine: RuleEngine) -> None:
    engine.load("c", 'cidr("10.0.0.1", "10.0.0.0/40");')
    (failure,) = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert failure.kind == "runtime"
    assert "10.0.0.0/40" in failure.message


def test_in_list_and_set_list(engine: RuleEngine) -> None:
    engine.load(
        "l",
        'if in_list(event.proc.user, "web_users") { emit(#{context: #{uid: in_list(event.proc.uid, "uids")}}); }',
    )
    (failure,) = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert "no list named 'web_users'" in failure.message
    engine.set_list("web_users", ["www-data", "nginx"])
    engine.set_list("uids", ["33"])
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    assert match.alert["context"] == {"uid": True}
    assert engine.evaluate_jsonl(jsonl(make_event(user="alice"))).matches == []
    engine.set_list("web_users", ["alice"])  # replaces the list
    assert len(engine.evaluate_jsonl(jsonl(make_event(user="alice"))).matches) == 1
    assert engine.evaluate_jsonl(jsonl(make_event())).matches == []
    with pytest.raises(TypeError):
        engine.set_list("bad", "not-a-list")


def test_entropy(engine: RuleEngine) -> None:
    engine.load(
        "e",
        'emit(#{context: #{empty: entropy(""), same: entropy("aaaa"), two: entropy("abab"), four: entropy("abcd"), dga: entropy("x9qz7lmp2vt8kr4w")}});',
    )
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    ctx = match.alert["context"]
    assert (ctx["empty"], ctx["same"], ctx["two"], ctx["four"]) == (0.0, 0.0, 1.0, 2.0)
    assert ctx["dga"] == 4.0


def test_enrich_without_the_capability_fails_to_compile(engine: RuleEngine) -> None:
    with pytest.raises(RuleCompileError) as info:
        engine.load("no_cap", '\nlet owner = enrich("host", event.host.id);')
    assert info.value.line == 2
    assert "capability 'enrich'" in str(info.value)


def test_enrich_called_indirectly_without_the_capability_fails_at_run_time(
    engine: RuleEngine,
) -> None:
    engine.load("sneaky", 'let f = Fn("enrich"); let x = f.call("host", "h-017"); emit();')
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert result.matches == []
    (failure,) = result.failures
    assert failure.kind == "capability"
    assert "capability 'enrich'" in failure.message


def test_enrich_with_the_capability_returns_the_map_or_unit(engine: RuleEngine) -> None:
    engine.load(
        "owner",
        """
        let info = enrich("host", event.host.id);
        let none = enrich("host", "h-unknown");
        let other = enrich("nothing", "x");
        emit(#{context: #{owner: info.owner, tags: info.tags, none: none == (), other: other == ()}});
    """,
        capabilities=["enrich"],
    )
    engine.set_enrichment("host", {"h-017": {"owner": "web-team", "tags": ["prod"]}})
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    assert match.alert["context"] == {
        "owner": "web-team",
        "tags": ["prod"],
        "none": True,
        "other": True,
    }
    with pytest.raises(TypeError):
        engine.set_enrichment("host", {"h-1": "not a dict"})  # type: ignore[dict-item]


def test_enrichment_lookups_are_copies(engine: RuleEngine) -> None:
    engine.load(
        "mutator",
        'let m = enrich("host", "h"); m.owner = "changed"; emit(#{context: m});',
        capabilities=["enrich"],
    )
    engine.set_enrichment("host", {"h": {"owner": "web-team"}})
    first = engine.evaluate_jsonl(jsonl(make_event())).matches[0].alert["context"]
    second = engine.evaluate_jsonl(jsonl(make_event())).matches[0].alert["context"]
    assert first == second == {"owner": "changed"}
    engine.load("reader", 'emit(#{context: enrich("host", "h")});', capabilities=["enrich"])
    assert engine.evaluate_jsonl(jsonl(make_event())).matches[1].alert["context"] == {
        "owner": "web-team"
    }


# --- windows ----------------------------------------------------------------------------

BRUTE_FORCE = """
    window_push(event.auth.src_ip);
    let n = window_count(event.auth.src_ip, 60);
    if n >= 3 { emit(#{context: #{failures: n}, dedup: event.auth.src_ip}); }
"""


def auth_at(seconds: int, src_ip: str = "198.51.100.7") -> dict[str, object]:
    minute, second = divmod(seconds, 60)
    return make_event("auth", ts=f"2026-12-03T08:{minute:02d}:{second:02d}Z", src_ip=src_ip)


def test_window_count_uses_event_time_across_batches(engine: RuleEngine) -> None:
    engine.load("brute", BRUTE_FORCE, kinds=["auth"])
    assert engine.evaluate_jsonl(jsonl(auth_at(0), auth_at(20))).matches == []
    second = engine.evaluate_jsonl(jsonl(auth_at(40, "203.0.113.9"), auth_at(59)))
    assert [(m.event_index, m.alert["context"]["failures"]) for m in second.matches] == [(1, 3)]
    # Two minutes later the window (ts - 60, ts] holds only the new event.
    assert engine.evaluate_jsonl(jsonl(auth_at(180, "192.0.2.1"))).matches == []
    # The window is half open: at 300 the event from exactly 60 s before (240) is outside it.
    assert (
        engine.evaluate_jsonl(
            jsonl(auth_at(240, "192.0.2.1"), auth_at(270, "192.0.2.1"), auth_at(300, "192.0.2.1"))
        ).matches
        == []
    )
    (match,) = engine.evaluate_jsonl(jsonl(auth_at(301, "192.0.2.1"))).matches
    assert match.alert["context"] == {"failures": 3}


def test_window_count_is_per_rule(engine: RuleEngine) -> None:
    engine.load("a", BRUTE_FORCE)
    engine.load(
        "b",
        'if event.ts == "2026-12-03T08:00:30Z" { window_push(event.auth.src_ip); } emit(#{context: #{n: window_count(event.auth.src_ip, 60)}});',
    )
    result = engine.evaluate_jsonl(jsonl(auth_at(0), auth_at(30), auth_at(50)))
    counts = [m.alert["context"]["n"] for m in result.matches if m.rule_id == "b"]
    assert counts == [0, 1, 1]
    assert [m.event_index for m in result.matches if m.rule_id == "a"] == [2]


def test_window_distinct_counts_values_including_the_current_one(engine: RuleEngine) -> None:
    engine.load(
        "scan", "emit(#{context: #{n: window_distinct(event.net.src_ip, event.net.dst_port, 30)}});"
    )
    events = [
        make_event("net", ts=f"2026-12-03T08:00:{s:02d}Z", dst_port=port)
        for s, port in [(0, 22), (5, 22), (10, 80), (20, 443), (45, 8080)]
    ]
    result = engine.evaluate_jsonl(jsonl(*events))
    assert [m.alert["context"]["n"] for m in result.matches] == [1, 1, 2, 3, 2]


def test_window_needs_an_rfc3339_event_time(engine: RuleEngine) -> None:
    engine.load("w", "window_push(event.host.id);")
    no_ts = make_event()
    del no_ts["ts"]
    result = engine.evaluate_jsonl(
        jsonl(no_ts, make_event(ts="yesterday"), make_event(ts="2026-12-03T10:00:00+02:00"))
    )
    assert [(f.event_index, f.kind) for f in result.failures] == [(0, "runtime"), (1, "runtime")]
    assert "no 'ts'" in result.failures[0].message
    assert "RFC 3339" in result.failures[1].message


def test_window_length_must_be_positive(engine: RuleEngine) -> None:
    engine.load("w", "window_count(event.host.id, 0);")
    (failure,) = engine.evaluate_jsonl(jsonl(make_event())).failures
    assert "positive" in failure.message


def test_window_memory_is_bounded_by_limits() -> None:
    engine = RuleEngine(Limits(max_window_keys=2, max_window_entries_per_key=3))
    engine.load(
        "w",
        "window_push(event.auth.src_ip); emit(#{context: #{n: window_count(event.auth.src_ip, 3600)}});",
    )
    same_key = engine.evaluate_jsonl(jsonl(*[auth_at(s) for s in range(5)]))
    assert [m.alert["context"]["n"] for m in same_key.matches] == [1, 2, 3, 3, 3]
    # Two more keys evict the oldest one; coming back it starts from scratch.
    engine.evaluate_jsonl(jsonl(auth_at(10, "1.1.1.1"), auth_at(11, "2.2.2.2")))
    back = engine.evaluate_jsonl(jsonl(auth_at(12)))
    assert back.matches[0].alert["context"] == {"n": 1}


# --- replace_all, remove, hot reload ----------------------------------------------------


def test_replace_all_swaps_the_whole_set(engine: RuleEngine) -> None:
    engine.load("old", "emit();")
    engine.replace_all(
        [
            {"id": "curl", "source": CURL_RULE, "kinds": ["proc"], "meta": {"severity": "high"}},
            {
                "id": "enricher",
                "source": 'emit(#{context: enrich("host", "h")});',
                "capabilities": ["enrich"],
            },
            {"id": "limited", "source": "while true {}", "limits": {"max_operations": 50}},
        ]
    )
    assert [r.id for r in engine.rules()] == ["curl", "enricher", "limited"]
    result = engine.evaluate_jsonl(jsonl(make_event()))
    assert sorted(matched(result)) == [("curl", 0), ("enricher", 0)]
    assert result.matches[0].alert["severity"] == "high"
    assert [f.rule_id for f in result.failures] == ["limited"]


def test_replace_all_with_one_broken_rule_changes_nothing(engine: RuleEngine) -> None:
    engine.replace_all([{"id": "curl", "source": CURL_RULE}, {"id": "all", "source": "emit();"}])
    before = [(r.id, r.hash) for r in engine.rules()]
    with pytest.raises(RuleCompileError) as info:
        engine.replace_all(
            [
                {"id": "curl", "source": "emit();"},
                {"id": "new", "source": "emit();"},
                {"id": "broken", "source": "let x = 1;\nlet y = (x + ;"},
            ]
        )
    assert (info.value.rule_id, info.value.line) == ("broken", 2)
    assert "rule 'broken' line 2" in str(info.value)
    assert [(r.id, r.hash) for r in engine.rules()] == before
    assert sorted(
        matched(engine.evaluate_jsonl(jsonl(make_event(), make_event(exe="/bin/ls"))))
    ) == [("all", 0), ("all", 1), ("curl", 0)]


def test_replace_all_refuses_duplicates_and_malformed_entries(engine: RuleEngine) -> None:
    engine.load("keep", "emit();")
    with pytest.raises(RuleError, match="more than once"):
        engine.replace_all([{"id": "a", "source": "()"}, {"id": "a", "source": "()"}])
    with pytest.raises(ValueError, match="has no 'source'"):
        engine.replace_all([{"id": "a"}])
    with pytest.raises(ValueError, match="unknown key 'sorce'"):
        engine.replace_all([{"id": "a", "sorce": "()"}])  # type: ignore[typeddict-unknown-key]
    with pytest.raises(TypeError):
        engine.replace_all(["not a dict"])  # type: ignore[list-item]
    assert [r.id for r in engine.rules()] == ["keep"]


def test_remove(engine: RuleEngine) -> None:
    engine.load("a", "emit();", kinds=["proc"])
    engine.load("b", "emit();")
    assert engine.remove("a") is True
    assert engine.remove("a") is False
    assert [r.id for r in engine.rules()] == ["b"]
    assert matched(engine.evaluate_jsonl(jsonl(make_event()))) == [("b", 0)]
    assert "a" not in engine.stats()


def test_unchanged_reload_does_not_recompile_and_keeps_window_state(engine: RuleEngine) -> None:
    engine.load("brute", BRUTE_FORCE)
    assert engine.compiles == 1
    engine.evaluate_jsonl(jsonl(auth_at(0), auth_at(10)))
    engine.load("brute", BRUTE_FORCE, meta={"severity": "high"})
    engine.replace_all([{"id": "brute", "source": BRUTE_FORCE, "meta": {"severity": "high"}}])
    assert engine.compiles == 1
    (match,) = engine.evaluate_jsonl(jsonl(auth_at(20))).matches
    assert match.alert["context"] == {"failures": 3}
    assert match.alert["severity"] == "high"  # new metadata applies
    assert engine.stats()["brute"]["evals"] == 3


def test_changed_source_recompiles_and_resets_window_state(engine: RuleEngine) -> None:
    engine.load("brute", BRUTE_FORCE)
    engine.evaluate_jsonl(jsonl(auth_at(0), auth_at(10)))
    changed = BRUTE_FORCE.replace("n >= 3", "n >= 2")
    engine.replace_all([{"id": "brute", "source": changed}])
    assert engine.compiles == 2
    assert engine.stats()["brute"]["evals"] == 0
    result = engine.evaluate_jsonl(jsonl(auth_at(20), auth_at(30)))
    assert [m.alert["context"]["failures"] for m in result.matches] == [2]


def test_same_source_under_another_id_reuses_the_compilation(engine: RuleEngine) -> None:
    engine.load("a", CURL_RULE)
    engine.load("b", CURL_RULE)
    assert engine.compiles == 1
    engine.load("c", CURL_RULE, limits={"max_operations": 10})  # other engine limits
    assert engine.compiles == 2


def test_failed_load_keeps_the_previous_version(engine: RuleEngine) -> None:
    engine.load("curl", CURL_RULE)
    with pytest.raises(RuleCompileError):
        engine.load("curl", "if (")
    assert matched(engine.evaluate_jsonl(jsonl(make_event()))) == [("curl", 0)]


# --- stats ------------------------------------------------------------------------------


def test_stats_count_evals_matches_failures_and_time(engine: RuleEngine) -> None:
    engine.load("curl", CURL_RULE, kinds=["proc"])
    engine.load("spin", "while true {}", kinds=["net"])
    data = jsonl(make_event(), make_event(exe="/bin/ls"), make_event(), make_event("net"), "{bad")
    engine.evaluate_jsonl(data)
    engine.evaluate([make_event()])
    stats = engine.stats()
    assert set(stats) == {"curl", "spin"}
    assert {k: v for k, v in stats["curl"].items() if k != "total_ns"} == {
        "evals": 4,
        "matches": 3,
        "failures": 0,
        # /bin/ls: the condition is false, decided without running Rhai.
        "native": 1,
    }
    assert {k: v for k, v in stats["spin"].items() if k != "total_ns"} == {
        "evals": 1,
        "matches": 0,
        "failures": 1,
        "native": 0,
    }
    assert stats["spin"]["total_ns"] > stats["curl"]["total_ns"] > 0


def test_results_have_readable_reprs(engine: RuleEngine) -> None:
    engine.load("curl", CURL_RULE)
    engine.load("spin", "while true {}")
    result = engine.evaluate_jsonl(jsonl(make_event(), "{"))
    assert repr(result.matches[0]) == "Match(rule_id='curl', event_index=0)"
    assert repr(result.failures[0]).startswith(
        "Failure(rule_id='spin', event_index=0, kind='limit'"
    )
    assert "line=1, column=12" in repr(result.failures[0])
    assert repr(result.parse_errors[0]).startswith("ParseFailure(event_index=1")
    assert repr(engine.rules()[0]).startswith("Rule(id='curl', hash='")


def test_alerts_are_plain_json_serializable(engine: RuleEngine) -> None:
    engine.load("curl", "emit(#{context: #{f: Fn(\"x\"), c: 'z', blob: 1.0 / 3.0}});")
    (match,) = engine.evaluate_jsonl(jsonl(make_event())).matches
    encoded = json.loads(json.dumps(match.alert))
    assert encoded["context"]["c"] == "z"
    assert isinstance(encoded["context"]["f"], str)
