//! Arbitrary bytes as events and as rule source, under tight limits: the engine must never
//! panic (not even a contained panic, reported as a "panic" failure) and must always answer,
//! and an engine without the native fast path must give exactly the same results.
//!
//! Run with `cd native/fuzz && cargo +nightly fuzz run evaluate_jsonl -- -max_total_time=60`.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sentinel_rhai::engine::{BatchOutcome, FailureKind, LoadError, RuleEngine, RuleSpec};
use sentinel_rhai::limits::Limits;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    source: &'a str,
    events: &'a [u8],
    can_enrich: bool,
}

/// Rules that touch every script function, so arbitrary events reach all of them.
const FIXED_RULES: &[(&str, &str)] = &[
    (
        "glob",
        r#"if glob(event.proc.exe, "*/[a-c]?rl*") { emit(#{context: #{e: event.proc}}); }"#,
    ),
    (
        "regex",
        r#"if re_match(event.proc.cmdline, "(?i)https?://[0-9.]+") { emit(); }"#,
    ),
    (
        "cidr",
        r#"if cidr(event.net.dst_ip, "10.0.0.0/8") || cidr(event.net.dst_ip, "fd00::/8") { emit(); }"#,
    ),
    (
        "list",
        r#"if in_list(event.auth.user, "admins") { emit(); }"#,
    ),
    (
        "entropy",
        r#"if entropy(event.dns.query) > 3.5 { emit(); }"#,
    ),
    (
        "window",
        r#"window_push(event.host.id); if window_distinct(event.host.id, event.kind, 60) > 2 && window_count(event.host.id, 10) > 3 { emit(); }"#,
    ),
];

fn limits() -> Limits {
    Limits {
        max_operations: 10_000,
        deadline_ms: 50,
        max_string_size: 4096,
        max_array_size: 256,
        max_map_size: 256,
        max_window_keys: 32,
        max_window_entries_per_key: 32,
        ..Limits::default()
    }
}

fn summary(outcome: &BatchOutcome) -> String {
    format!(
        "{} {:?} {:?} {:?}",
        outcome.events, outcome.matches, outcome.failures, outcome.parse_errors
    )
}

fuzz_target!(|input: Input<'_>| {
    let Ok(mut engine) = RuleEngine::new(limits()) else {
        return;
    };
    let Ok(mut plain) = RuleEngine::new(limits()) else {
        return;
    };
    plain.set_fast_path(false);
    engine.set_list("admins".into(), ["root".to_string()].into_iter().collect());
    plain.set_list("admins".into(), ["root".to_string()].into_iter().collect());
    let mut specs: Vec<RuleSpec> = FIXED_RULES
        .iter()
        .map(|(id, source)| RuleSpec {
            id: (*id).into(),
            source: (*source).into(),
            ..RuleSpec::default()
        })
        .collect();
    specs.push(RuleSpec {
        id: "fuzzed".into(),
        source: input.source.into(),
        capabilities: if input.can_enrich {
            vec!["enrich".into()]
        } else {
            Vec::new()
        },
        ..RuleSpec::default()
    });
    let loaded = plain.replace_all(specs.clone()).is_ok();
    match engine.replace_all(specs) {
        Ok(()) => assert_eq!(engine.len(), FIXED_RULES.len() + 1),
        Err(LoadError::Compile { rule_id, .. } | LoadError::Limit { rule_id, .. }) => {
            assert_eq!(rule_id, "fuzzed");
            assert!(
                engine.is_empty(),
                "a failed replace_all must change nothing"
            );
        }
        Err(other) => panic!("unexpected load error {other:?}"),
    }
    assert_eq!(loaded, !engine.is_empty());
    for _ in 0..2 {
        let outcome = engine.evaluate_jsonl(input.events);
        assert!(
            outcome
                .failures
                .iter()
                .all(|f| f.kind != FailureKind::Panic),
            "{:?}",
            outcome.failures
        );
        let lines = input.events.split(|&b| b == b'\n').count();
        assert!(outcome.events + outcome.parse_errors.len() <= lines);
        let interpreted = plain.evaluate_jsonl(input.events);
        assert_eq!(summary(&outcome), summary(&interpreted), "the fast path changed a result");
    }
});
