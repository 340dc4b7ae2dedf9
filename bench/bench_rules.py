"""The core pack through the Rhai engine: the batch path (evaluate_jsonl) against a naive path.

Naive = what a Python worker would do without the batch API: json.loads each line in Python, then
one `evaluate([event])` call per event. Both run in the same process on the same events.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import orjson
from sentinel_rhai import RuleEngine

from agents.scenarios import generate
from bench.common import Result, write_section
from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT

THREAT_INTEL = {"203.0.113.7": {"reputation": "malicious", "feed": "bench"}}


def _engine(fast_path: bool = True) -> tuple[RuleEngine, int]:
    pack = load_pack(PROJECT_ROOT / "rules" / "core")
    engine = RuleEngine(fast_path=fast_path)
    engine.replace_all(pack.engine_specs())
    for name, values in pack.lists.items():
        engine.set_list(name, values)
    engine.set_enrichment("ip", THREAT_INTEL)
    return engine, len(pack.rules)


def dump(directory: Path, count: int) -> None:
    """Write the benchmark's events and rule set for the engine-only Rust harness
    (`cd native && cargo run --release --example engine -- DIR/events.jsonl DIR/rules.json`)."""
    pack = load_pack(PROJECT_ROOT / "rules" / "core")
    directory.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps(e) for e in generate("mixed", count, seed=31)]
    (directory / "events.jsonl").write_bytes(b"\n".join(lines))
    rules = {
        "rules": [
            {
                "id": spec["id"],
                "source": spec["source"],
                "kinds": spec.get("kinds"),
                "capabilities": list(spec.get("capabilities") or []),
                "meta": spec.get("meta") or {},
            }
            for spec in pack.engine_specs()
        ],
        "lists": {name: sorted(values) for name, values in pack.lists.items()},
        "enrichment": {"ip": THREAT_INTEL},
    }
    (directory / "rules.json").write_text(json.dumps(rules, default=list))


def _batch_path(
    chunks: list[bytes], fast_path: bool
) -> tuple[float, list[float], int, dict[str, int]]:
    """Seconds for all chunks, per-chunk latencies, matches, and summed engine stats."""
    engine, _ = _engine(fast_path)
    engine.evaluate_jsonl(chunks[0])  # warm: compile caches, regexes
    engine, _ = _engine(fast_path)
    latencies = []
    matches = 0
    started = time.perf_counter()
    for chunk in chunks:
        t0 = time.perf_counter()
        result = engine.evaluate_jsonl(chunk)
        latencies.append(time.perf_counter() - t0)
        matches += len(result.matches)
    elapsed = time.perf_counter() - started
    stats = engine.stats().values()
    totals = {key: sum(s[key] for s in stats) for key in ("evals", "native")}
    return elapsed, latencies, matches, totals


def _naive_rate(lines: list[bytes]) -> float:
    """Events/s of the naive path over `lines`, on a fresh engine."""
    engine, _ = _engine()
    started = time.perf_counter()
    for line in lines:
        engine.evaluate([json.loads(line)])
    return len(lines) / (time.perf_counter() - started)


def run(count: int, batch: int, naive_count: int, rounds: int = 5) -> list[Result]:
    lines = [orjson.dumps(e) for e in generate("mixed", count, seed=31)]
    chunks = [b"\n".join(lines[i : i + batch]) for i in range(0, count, batch)]
    rules = len(_engine()[0].rules())
    # The same batches interpreted by Rhai alone: what the native fast path is worth, and a
    # check that it changes no alert.
    rhai_elapsed, _, rhai_matches, _ = _batch_path(chunks, fast_path=False)
    # Both paths are measured in alternating rounds (all batches, then a slice of the naive
    # events), and the speed-up is the median of the rounds' ratios: the machine's speed
    # drifts (other work, frequency), and measuring one path after the other let a drift
    # land on one side only.
    share = max(1, naive_count // rounds)
    batch_runs: list[tuple[float, list[float], int, dict[str, int]]] = []
    naive_rates: list[float] = []
    for r in range(rounds):
        batch_runs.append(_batch_path(chunks, fast_path=True))
        start = (r * share) % len(lines)
        naive_rates.append(_naive_rate(lines[start : start + share]))
    ratios = [count / b[0] / rate for b, rate in zip(batch_runs, naive_rates, strict=True)]
    elapsed, _, matches, totals = sorted(batch_runs, key=lambda b: b[0])[rounds // 2]
    if rhai_matches != matches:
        raise SystemExit(f"fast path changed the alerts: {matches} vs {rhai_matches} without it")
    latencies = [latency for b in batch_runs for latency in b[1]]
    evals = totals["evals"]
    batch_rate = count / elapsed
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    naive_rate = statistics.median(naive_rates)
    speedup = statistics.median(ratios)
    spread = f"rounds: {', '.join(f'{r:.1f}x' for r in ratios)}"
    return [
        Result(
            "rules",
            "batch path: events",
            batch_rate,
            "events/s",
            ">= 100,000/s",
            batch_rate >= 100_000,
            f"{count:,} mixed events, {rules} rules, batches of {batch}, {matches:,} matches;"
            f" median of {rounds} rounds",
        ),
        Result(
            "rules",
            "batch path: rule evaluations",
            evals / elapsed,
            "evals/s",
            ">= 1,000,000/s",
            evals / elapsed >= 1_000_000,
            "after the kind prefilter",
        ),
        Result(
            "rules", f"batch path: p99 latency per {batch}-event batch", p99, "ms", "", None, ""
        ),
        Result(
            "rules",
            "batch path: evaluations decided by the native fast path",
            100 * totals["native"] / evals,
            "%",
            "",
            None,
            "the rest interpreted by Rhai",
        ),
        Result(
            "rules",
            "batch path without the fast path (RuleEngine(fast_path=False))",
            count / rhai_elapsed,
            "events/s",
            "",
            None,
            f"same batches, same {rhai_matches:,} matches",
        ),
        Result(
            "rules",
            "naive path: json.loads + evaluate([event])",
            naive_rate,
            "events/s",
            "",
            None,
            f"median of {rounds} rounds of {share:,} events",
        ),
        Result(
            "rules",
            "batch / naive speed-up",
            speedup,
            "x",
            ">= 10x",
            speedup >= 10,
            f"median of the rounds' ratios ({spread})",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--naive-count", type=int, default=50_000)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds of both paths (median)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    parser.add_argument(
        "--dump",
        type=Path,
        metavar="DIR",
        help="only write DIR/events.jsonl and DIR/rules.json for native/bench/engine.rs",
    )
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.dump, args.count)
        return []
    results = run(args.count, args.batch, args.naive_count, args.rounds)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "rules",
            f"python -m bench.bench_rules --count {args.count} --batch {args.batch}"
            f" --rounds {args.rounds}",
            results,
            "Release build of native/ (maturin --release), one thread.",
        )
    return results


if __name__ == "__main__":
    main()
