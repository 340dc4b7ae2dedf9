"""Benchmarks (`make bench`): each module measures one path and returns rows for PERFORMANCE.md."""
