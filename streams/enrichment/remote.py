"""Client of an HTTP reputation service (`GET {base_url}/{kind}/{key}`: 200 record, 404 unknown)
that degrades to "not enriched" instead of failing or stalling the stream."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from sentinel.logs import get_logger
from streams.enrichment.metrics import EnrichmentMetrics
from streams.enrichment.resilience import (
    ABSENT,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    RetryPolicy,
    TtlCache,
)

log = get_logger(__name__)
Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    """`record` when the service knows the key; `degraded` when it gave no answer in time."""

    record: Record | None
    degraded: bool = False


class _NoAnswer(Exception):
    """An attempt got no answer; `retry` says whether another attempt might."""

    def __init__(self, *, retry: bool) -> None:
        super().__init__()
        self.retry = retry


class RemoteLookup:
    """Per-call timeout, bounded retries with backoff, a circuit breaker, a bulkhead and a TTL
    cache (negative answers included) around one reputation service. `lookup` never raises."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 0.1,
        deadline_s: float = 0.5,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        concurrency: int = 16,
        cache: TtlCache[tuple[str, str], Record | None] | None = None,
        negative_ttl_s: float = 60.0,
        headers: dict[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the remote enrichment URL must be http(s)://..., got '{base_url}'")
        if timeout_s <= 0 or deadline_s <= 0:
            raise ValueError("timeout_s and deadline_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.retry = retry if retry is not None else RetryPolicy()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.bulkhead = Bulkhead(concurrency)
        self.cache: TtlCache[tuple[str, str], Record | None] = (
            cache if cache is not None else TtlCache()
        )
        self.negative_ttl_s = negative_ttl_s
        self.metrics = EnrichmentMetrics()
        self._headers = {"accept": "application/json", **(headers or {})}
        self._rng = rng if rng is not None else random.Random()
        # Loading CA certificates and httpx's lazy imports take ~100 ms: pay that at start-up,
        # not inside the first batch's deadline.
        self._ssl = httpx.create_ssl_context()
        self._client: httpx.AsyncClient | None = self._new_client()
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def url(self, kind: str, key: str) -> str:
        return f"{self.base_url}/{quote(kind, safe='')}/{quote(key, safe=':')}"

    async def lookup(self, kind: str, key: str, *, budget_s: float | None = None) -> RemoteAnswer:
        """The service's record for `key`, within `budget_s` (default `deadline_s`) seconds."""
        m = self.metrics
        m.lookups += 1
        cached = self.cache.get((kind, key))
        if cached is not ABSENT:
            m.cache_hits += 1
            return self._answered(cached)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.deadline_s if budget_s is None else budget_s)
        url = self.url(kind, key)
        for attempt in range(self.retry.attempts):
            if attempt:
                delay = self.retry.delay(attempt - 1, self._rng)
                if loop.time() + delay >= deadline:
                    break  # no time left for another attempt
                await asyncio.sleep(delay)
            try:
                record = await self._attempt(url, deadline)
            except _NoAnswer as exc:
                if exc.retry:
                    continue
                break
            ttl = None if record is not None else self.negative_ttl_s
            self.cache.put((kind, key), record, ttl)
            return self._answered(record)
        m.degraded += 1
        return RemoteAnswer(None, degraded=True)

    async def _attempt(self, url: str, deadline: float) -> Record | None:
        """One call: the record, or None for a 404; `_NoAnswer` when there was no answer."""
        loop = asyncio.get_running_loop()
        m = self.metrics
        if loop.time() >= deadline:
            m.timeouts += 1
            raise _NoAnswer(retry=False)
        try:
            # Waiting for a slot counts against the caller's deadline, not the per-call timeout.
            async with asyncio.timeout_at(deadline), self.bulkhead.slot():
                if not self.breaker.allow():
                    m.circuit_open_rejections += 1
                    raise _NoAnswer(retry=False)
                try:
                    async with asyncio.timeout_at(min(loop.time() + self.timeout_s, deadline)):
                        response = await self._session().get(url)
                except (TimeoutError, httpx.TimeoutException):
                    m.timeouts += 1
                    self._failure(url, "timeout")
                    raise _NoAnswer(retry=True) from None
                except asyncio.CancelledError:
                    self.breaker.record_abandoned()  # no verdict on the service either way
                    raise
                except Exception as exc:
                    # Whatever the client raises (refused, reset, bad URL) is a failure to
                    # answer; the stream must never see it.
                    m.errors += 1
                    self._failure(url, f"{type(exc).__name__}: {exc}")
                    raise _NoAnswer(retry=True) from None
        except TimeoutError:  # the deadline passed while waiting for a slot
            m.timeouts += 1
            raise _NoAnswer(retry=False) from None
        return self._verdict(url, response)

    def _verdict(self, url: str, response: httpx.Response) -> Record | None:
        m = self.metrics
        status = response.status_code
        if status == 404:
            self._success()
            return None
        if status == 200:
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                body, problem = None, f"invalid JSON: {exc}"
            else:
                problem = "" if isinstance(body, dict) else "the body is not a JSON object"
            if isinstance(body, dict):
                self._success()
                return body
            m.errors += 1
            self._failure(url, f"200 with {problem}")
            raise _NoAnswer(retry=False)
        m.errors += 1
        self._failure(url, f"HTTP {status}")
        # Overload and server errors may pass; other statuses (401, 400, ...) will not.
        raise _NoAnswer(retry=status == 429 or status >= 500)

    def _answered(self, record: Record | None) -> RemoteAnswer:
        if record is None:
            self.metrics.misses += 1
        else:
            self.metrics.hits += 1
        return RemoteAnswer(record)

    def _success(self) -> None:
        before = self.breaker.state
        self.breaker.record_success()
        if before is not BreakerState.CLOSED and self.breaker.state is BreakerState.CLOSED:
            log.info("enrichment circuit closed", service=self.base_url)

    def _failure(self, url: str, reason: str) -> None:
        log.debug("enrichment lookup failed", url=url, reason=reason)
        before = self.breaker.state
        self.breaker.record_failure()
        if before is not BreakerState.OPEN and self.breaker.state is BreakerState.OPEN:
            log.warning(
                "enrichment circuit opened: lookups skipped until the cool-down ends",
                service=self.base_url,
                reason=reason,
                cooldown_s=self.breaker.cooldown_s,
            )

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self._headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=self.bulkhead.limit),
            verify=self._ssl,
        )

    def _session(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        # An AsyncClient's connections belong to the loop that first used them.
        if self._client is None or self._client_loop not in (None, loop):
            self._client, self._client_loop = self._new_client(), None
        self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop in (None, asyncio.get_running_loop()):
            await self._client.aclose()
        self._client = self._client_loop = None
