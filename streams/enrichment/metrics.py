"""Counters every enrichment adapter keeps, local or remote, for the worker's metrics views."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class EnrichmentMetrics:
    """Monotonic counters of one adapter (never reset, so they scrape like Prometheus counters)."""

    lookups: int = 0  # every lookup asked of the adapter, cached or not
    hits: int = 0  # answered with a record
    misses: int = 0  # answered "unknown" (a 404 from a remote service)
    degraded: int = 0  # not answered: timeout, error or open circuit; the key stays unenriched
    errors: int = 0  # failed attempts other than timeouts (5xx, bad JSON, connection refused)
    timeouts: int = 0  # attempts (or waits for a slot) cut off by a timeout or the deadline
    circuit_open_rejections: int = 0  # attempts the circuit breaker refused without a call
    cache_hits: int = 0  # lookups answered from the cache, negative answers included

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
