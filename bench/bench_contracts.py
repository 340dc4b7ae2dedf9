"""Contract validation throughput on one core: dicts in memory, and JSON Lines parsed + validated."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agents.replay import write_jsonl
from agents.scenarios import generate
from bench.common import Result, write_section
from sentinel.contracts import validate, validate_jsonl

TARGET = 50_000


def run(count: int) -> list[Result]:
    events = list(generate("mixed", count, seed=11))
    validate("event", events[0])  # compile the schema outside the timing
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for event in events:
            validate("event", event)
        best = max(best, count / (time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_jsonl(events, path)
        started = time.perf_counter()
        report = validate_jsonl(path, "event")
        file_rate = count / (time.perf_counter() - started)
    assert report.bad == 0, report.errors[:3]
    return [
        Result(
            "contracts",
            "validate(event) on dicts, best of 3",
            best,
            "events/s",
            f">= {TARGET:,}/s/core",
            best >= TARGET,
            f"{count:,} mixed events",
        ),
        Result(
            "contracts",
            "JSON Lines: parse + validate",
            file_rate,
            "lines/s",
            f">= {TARGET:,}/s/core",
            file_rate >= TARGET,
            "orjson + jsonschema-rs",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    results = run(args.count)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section("contracts", f"python -m bench.bench_contracts --count {args.count}", results)
    return results


if __name__ == "__main__":
    main()
