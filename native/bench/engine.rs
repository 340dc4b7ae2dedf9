//! Engine-only throughput (no Python): replays a JSONL file through `evaluate_jsonl` in
//! batches, with a rule set from a JSON file, and prints events/s and evaluations/s.
//!
//! ```sh
//! cargo run --release --example engine -- EVENTS.jsonl RULES.json [batch] [repeats]
//! ```
//!
//! RULES.json: `{"rules": [{"id", "source", "kinds", "capabilities", "meta"}],
//! "lists": {name: [values]}, "enrichment": {kind: {key: value}}}` — what
//! `bench/bench_rules.py --dump DIR` writes for the core pack.

use std::time::Instant;

use rhai::{Dynamic, Map};
use sentinel_rhai::engine::{RuleEngine, RuleSpec};
use sentinel_rhai::limits::Limits;
use serde_json::Value;

fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

fn engine(rules: &Value) -> RuleEngine {
    let mut engine = RuleEngine::new(Limits::default()).expect("default limits");
    let specs = rules["rules"]
        .as_array()
        .expect("rules: a list")
        .iter()
        .map(|r| RuleSpec {
            id: r["id"].as_str().unwrap_or_default().to_string(),
            source: r["source"].as_str().unwrap_or_default().to_string(),
            capabilities: r["capabilities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| Some(c.as_str()?.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            kinds: r["kinds"].as_array().map(|a| {
                a.iter()
                    .filter_map(|c| Some(c.as_str()?.to_string()))
                    .collect()
            }),
            limits: None,
            meta: r["meta"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                        .collect()
                })
                .unwrap_or_else(Map::new),
        })
        .collect();
    engine.replace_all(specs).expect("rules compile");
    for (name, values) in rules["lists"].as_object().into_iter().flatten() {
        let set = values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some(v.as_str()?.to_string()))
            .collect();
        engine.set_list(name.clone(), set);
    }
    for (kind, table) in rules["enrichment"].as_object().into_iter().flatten() {
        let table = table
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), to_dynamic(v)))
            .collect();
        engine.set_enrichment(kind.clone(), table);
    }
    engine
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: engine EVENTS.jsonl RULES.json [batch] [repeats]");
        std::process::exit(2);
    }
    let data = std::fs::read(&args[1]).expect("events file");
    let rules: Value =
        serde_json::from_slice(&std::fs::read(&args[2]).expect("rules file")).expect("rules json");
    let batch: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let repeats: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let chunks: Vec<Vec<u8>> = lines.chunks(batch).map(|c| c.join(&b'\n')).collect();
    for _ in 0..repeats {
        let mut engine = engine(&rules);
        let (mut matches, mut failures, mut signature) = (0usize, 0usize, 0u64);
        let started = Instant::now();
        for chunk in &chunks {
            let out = engine.evaluate_jsonl(chunk);
            matches += out.matches.len();
            failures += out.failures.len();
            for m in &out.matches {
                signature = signature
                    .wrapping_mul(31)
                    .wrapping_add(m.event_index as u64 + m.alert.len() as u64);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let stats = engine.stats();
        let evals: u64 = stats.iter().map(|(_, s)| s.evals).sum();
        if std::env::var_os("ENGINE_RULE_STATS").is_some() {
            for (id, s) in &stats {
                eprintln!(
                    "{id:<32} {:>8} evals {:>7.0} ns/eval {:>6.1} ms",
                    s.evals,
                    s.total_ns as f64 / s.evals.max(1) as f64,
                    s.total_ns as f64 / 1e6
                );
            }
        }
        println!(
            "{:>9.0} events/s {:>9.0} evals/s  ({} events, {evals} evals, {matches} matches, {failures} failures, signature {signature:x})",
            lines.len() as f64 / elapsed,
            evals as f64 / elapsed,
            lines.len()
        );
    }
}
