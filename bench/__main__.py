"""`make bench`: run every benchmark and record the results in docs/PERFORMANCE.md."""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "bench.bench_contracts",
    "bench.bench_replay",
    "bench.bench_rules",
    "bench.bench_stream",
    "bench.bench_lake",
    "bench.bench_scoring",
    "bench.bench_agent_exec",
    "bench.bench_agent",
    "bench.bench_ingest",
    "bench.bench_gateway",
]


def main() -> int:
    failed = []
    for name in BENCHES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a benchmark that has not landed yet
            raise
        print(f"== {name}", flush=True)
        results = module.main([])
        failed += [r for r in results if r.met is False]
    for r in failed:
        print(f"target missed: {r.bench} {r.metric}: {r.value:,.0f} {r.unit} ({r.target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
