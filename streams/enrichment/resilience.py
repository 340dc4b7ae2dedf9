"""Building blocks for calling services that may fail or stall: retry policy, circuit breaker,
bulkhead and a bounded TTL cache. No module state: each caller owns its instances."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

Clock = Callable[[], float]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` calls at most (the first included), with exponential backoff and full jitter."""

    attempts: int = 2
    base_delay_s: float = 0.01
    max_delay_s: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("backoff delays must not be negative")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        # Full jitter: clients that failed together do not retry together.
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2**retry))


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed until `failure_threshold` failures in a row, then open (calls refused) for
    `cooldown_s`, then half-open: one trial call; its success closes, its failure reopens."""

    def __init__(
        self, failure_threshold: int = 5, cooldown_s: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open, True once until that call reports back."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        # A late success from a call sent before the breaker opened proves little: stay open.
        if self._state is not BreakerState.OPEN:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def record_abandoned(self) -> None:
        """A permitted call was cancelled before it had an outcome: free the half-open trial."""
        self._trial_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._trial_in_flight = False
        self.times_opened += 1


class Bulkhead:
    """At most `limit` calls in flight at once; the others wait for a slot."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the bulkhead limit must be at least 1, got {limit}")
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # A semaphore belongs to one event loop; tests and CLIs may run several in turn.
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = asyncio.Semaphore(self.limit), loop
        semaphore = self._semaphore
        await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()


class Absent(enum.Enum):
    ABSENT = "absent"


ABSENT = Absent.ABSENT  # what `TtlCache.get` returns for "not cached", since None can be a value


class TtlCache(Generic[K, V]):
    """At most `maxsize` entries, each kept `ttl_s` seconds; least recently used go first."""

    def __init__(self, maxsize: int = 10_000, ttl_s: float = 300.0, clock: Clock = time.monotonic):
        if maxsize < 0 or ttl_s < 0:
            raise ValueError("maxsize and ttl_s must not be negative")
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | Literal[Absent.ABSENT]:
        entry = self._entries.get(key)
        if entry is None:
            return ABSENT
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return ABSENT
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if self.maxsize == 0 or ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
