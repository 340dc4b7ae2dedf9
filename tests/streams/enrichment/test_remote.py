"""RemoteLookup against a real HTTP server on loopback: retries, timeouts, the circuit breaker,
the bulkhead and the cache, with the server's own call counts as the evidence."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from streams.enrichment import RemoteAnswer, RemoteLookup
from streams.enrichment.resilience import CircuitBreaker, RetryPolicy
from tests.streams.enrichment.conftest import ReputationService

C2 = {"reputation": "malicious", "feed": "remote-ti", "tags": ["c2"]}
# A deadline plus this much is "returned in time": room for a slow CI machine, far below the
# two seconds a hanging server holds a request.
MARGIN_S = 0.5


def remote(service: ReputationService, **kwargs: Any) -> RemoteLookup:
    kwargs.setdefault("retry", RetryPolicy(attempts=1))
    kwargs.setdefault("deadline_s", 2.0)
    kwargs.setdefault("timeout_s", 1.0)
    return RemoteLookup(service.url, **kwargs)


def run(client: RemoteLookup, *keys: str, kind: str = "ip") -> list[RemoteAnswer]:
    async def main() -> list[RemoteAnswer]:
        try:
            return list(await asyncio.gather(*(client.lookup(kind, key) for key in keys)))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_known_key_returns_the_record_and_404_is_unknown(service: ReputationService) -> None:
    service.records[("ip", "203.0.113.99")] = C2
    client = remote(service)
    known, unknown = run(client, "203.0.113.99", "192.0.2.1")
    assert known == RemoteAnswer(C2)
    assert unknown == RemoteAnswer(None, degraded=False)
    assert sorted(service.paths) == ["/ip/192.0.2.1", "/ip/203.0.113.99"]
    m = client.metrics
    assert (m.lookups, m.hits, m.misses, m.degraded, m.errors) == (2, 1, 1, 0, 0)


def test_keys_are_escaped_into_the_path(service: ReputationService) -> None:
    service.records[("host", "rack 4/h-1")] = {"name": "odd"}
    service.records[("ip", "2001:db8::7")] = C2
    client = remote(service)
    assert run(client, "rack 4/h-1", kind="host")[0].record == {"name": "odd"}
    assert run(client, "2001:db8::7")[0].record == C2
    assert service.paths == ["/host/rack%204%2Fh-1", "/ip/2001:db8::7"]


def test_transient_500s_are_retried_until_an_answer(service: ReputationService) -> None:
    service.records[("ip", "203.0.113.99")] = C2
    service.fail_next = 2
    client = remote(service, retry=RetryPolicy(attempts=3, base_delay_s=0.01))
    assert run(client, "203.0.113.99") == [RemoteAnswer(C2)]
    assert service.calls == 3
    assert (client.metrics.errors, client.metrics.hits, client.metrics.degraded) == (2, 1, 0)
    assert client.breaker.state == "closed"


def test_retries_are_bounded_and_the_key_is_degraded(service: ReputationService) -> None:
    service.mode = "error"
    client = remote(service, retry=RetryPolicy(attempts=3, base_delay_s=0.001))
    assert run(client, "203.0.113.99") == [RemoteAnswer(None, degraded=True)]
    assert service.calls == 3
    assert (client.metrics.errors, client.metrics.degraded) == (3, 1)


def test_a_client_error_is_not_retried(service: ReputationService) -> None:
    service.statuses[("ip", "203.0.113.99")] = 403
    service.records[("ip", "203.0.113.98")] = b"[1, 2, 3]"  # 200, but not a record
    client = remote(service, retry=RetryPolicy(attempts=3, base_delay_s=0.001))
    answers = run(client, "203.0.113.99", "203.0.113.98")
    assert answers == [RemoteAnswer(None, degraded=True)] * 2
    assert service.calls == 2
    assert client.metrics.errors == 2


def test_a_hanging_service_degrades_within_the_deadline(service: ReputationService) -> None:
    service.mode = "hang"
    client = remote(
        service,
        timeout_s=0.1,
        deadline_s=0.3,
        retry=RetryPolicy(attempts=5, base_delay_s=0.01),
    )
    started = time.monotonic()
    answers = run(client, "203.0.113.99", "203.0.113.98")
    elapsed = time.monotonic() - started
    assert answers == [RemoteAnswer(None, degraded=True)] * 2
    assert elapsed < 0.3 + MARGIN_S
    assert client.metrics.timeouts >= 2 and client.metrics.degraded == 2
    assert client.metrics.errors == 0


def test_a_refused_connection_degrades_without_raising() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    client = RemoteLookup(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2))
    assert run(client, "203.0.113.99") == [RemoteAnswer(None, degraded=True)]
    assert client.metrics.errors == 2


def test_failures_open_the_circuit_and_then_calls_stop_reaching_the_server(
    service: ReputationService,
) -> None:
    service.mode = "error"
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=60)
    client = remote(service, breaker=breaker, retry=RetryPolicy(attempts=2, base_delay_s=0.001))

    async def main() -> None:
        for key in ["a1", "a2"]:  # 2 + 1 calls: the third failure opens, the fourth is refused
            assert await client.lookup("ip", key) == RemoteAnswer(None, degraded=True)
        assert service.calls == 3
        assert breaker.state == "open"
        for i in range(5):
            assert await client.lookup("ip", f"b{i}") == RemoteAnswer(None, degraded=True)
        await client.aclose()

    asyncio.run(main())
    assert service.calls == 3
    m = client.metrics
    assert (m.errors, m.circuit_open_rejections, m.degraded) == (3, 1 + 5, 7)


def test_after_the_cooldown_one_trial_goes_through_and_success_closes(
    service: ReputationService,
) -> None:
    service.mode = "error"
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=0.2)
    client = remote(service, breaker=breaker, concurrency=8)
    service.records.update({("ip", f"k{i}"): C2 for i in range(3)})

    async def main() -> None:
        await client.lookup("ip", "x1")
        await client.lookup("ip", "x2")
        assert breaker.state == "open"
        service.mode, service.delay_s = "ok", 0.1  # healthy again, and slow enough to overlap
        await asyncio.sleep(0.25)
        assert breaker.state == "half_open"
        trial, *others = await asyncio.gather(*(client.lookup("ip", f"k{i}") for i in range(3)))
        assert trial == RemoteAnswer(C2)
        assert others == [RemoteAnswer(None, degraded=True)] * 2  # refused while the trial ran
        assert breaker.state == "closed"
        assert await client.lookup("ip", "k1") == RemoteAnswer(C2)
        await client.aclose()

    asyncio.run(main())
    assert service.calls == 2 + 1 + 1
    assert client.metrics.circuit_open_rejections == 2


def test_a_failed_trial_reopens_the_circuit(service: ReputationService) -> None:
    service.mode = "error"
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0.1)
    client = remote(service, breaker=breaker)

    async def main() -> None:
        await client.lookup("ip", "x1")
        await asyncio.sleep(0.15)
        await client.lookup("ip", "x2")  # the trial, still failing
        assert breaker.state == "open"
        await client.lookup("ip", "x3")
        await client.aclose()

    asyncio.run(main())
    assert service.calls == 2
    assert breaker.times_opened == 2


def test_the_bulkhead_caps_concurrent_calls(service: ReputationService) -> None:
    service.delay_s = 0.1
    service.records.update({("ip", f"k{i}"): C2 for i in range(10)})
    client = remote(service, concurrency=3)
    answers = run(client, *(f"k{i}" for i in range(10)))
    assert answers == [RemoteAnswer(C2)] * 10
    assert service.calls == 10
    assert service.max_in_flight == 3


def test_the_cache_answers_repeats_including_unknown_keys(service: ReputationService) -> None:
    service.records[("ip", "203.0.113.99")] = C2
    client = remote(service)

    async def main() -> list[RemoteAnswer]:
        answers = [await client.lookup("ip", k) for k in ["203.0.113.99", "192.0.2.1"] * 3]
        await client.aclose()
        return answers

    answers = asyncio.run(main())
    assert answers == [RemoteAnswer(C2), RemoteAnswer(None)] * 3
    assert service.calls == 2
    m = client.metrics
    assert (m.lookups, m.cache_hits, m.hits, m.misses) == (6, 4, 3, 3)


def test_degraded_answers_are_not_cached(service: ReputationService) -> None:
    service.records[("ip", "203.0.113.99")] = C2
    service.fail_next = 1
    client = remote(service)

    async def main() -> list[RemoteAnswer]:
        answers = [await client.lookup("ip", "203.0.113.99") for _ in range(3)]
        await client.aclose()
        return answers

    assert asyncio.run(main()) == [RemoteAnswer(None, degraded=True), *[RemoteAnswer(C2)] * 2]
    assert service.calls == 2
