"""Retry policy, circuit breaker, bulkhead and TTL cache, on a hand-driven clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from streams.enrichment.resilience import (
    ABSENT,
    Bulkhead,
    CircuitBreaker,
    RetryPolicy,
    TtlCache,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter_below_it() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=0.01, max_delay_s=0.05)
    rng = random.Random(7)
    for retry, cap in enumerate([0.01, 0.02, 0.04, 0.05, 0.05]):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # jitter spreads over the whole range
        assert len(set(delays)) > 100


def test_retry_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        RetryPolicy(attempts=0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the run of failures is broken
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.times_opened == 1


def test_half_open_allows_one_trial_and_its_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # the trial is still out
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()


def test_half_open_trial_failure_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and breaker.times_opened == 2
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_an_abandoned_trial_lets_the_next_caller_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.record_abandoned()
    assert breaker.state == "half_open"
    assert breaker.allow()


def test_a_late_success_does_not_close_an_open_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state == "open"


def test_bulkhead_holds_concurrency_at_its_limit() -> None:
    bulkhead = Bulkhead(2)
    active = peak = 0

    async def work() -> None:
        nonlocal active, peak
        async with bulkhead.slot():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(7)))

    asyncio.run(main())
    asyncio.run(main())  # a second event loop gets a fresh semaphore
    assert peak == 2


def test_cache_keeps_negative_answers_apart_from_absent_keys() -> None:
    cache: TtlCache[str, dict[str, str] | None] = TtlCache(maxsize=10, ttl_s=5, clock=Clock())
    cache.put("known", {"reputation": "malicious"})
    cache.put("unknown", None)
    assert cache.get("known") == {"reputation": "malicious"}
    assert cache.get("unknown") is None
    assert cache.get("never-asked") is ABSENT


def test_cache_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(maxsize=10, ttl_s=5, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2, ttl_s=1)
    clock.now += 1
    assert cache.get("b") is ABSENT
    assert cache.get("a") == 1
    clock.now += 4
    assert cache.get("a") is ABSENT
    assert len(cache) == 0


def test_cache_evicts_the_least_recently_used_entry() -> None:
    cache: TtlCache[str, int] = TtlCache(maxsize=2, ttl_s=60, clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3)
    assert cache.get("b") is ABSENT
    assert (cache.get("a"), cache.get("c"), len(cache)) == (1, 3, 2)


def test_a_zero_size_cache_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(maxsize=0)
    cache.put("a", 1)
    assert cache.get("a") is ABSENT
