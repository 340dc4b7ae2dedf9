"""The sensor plug-in interface: start, a stream of events, stop.

A sensor observes one thing on the host (processes, files, sockets, DNS, logins) and yields
*partial* contract events: a dict with `kind`, the object named by `kind` and, optionally, `ts`
(RFC 3339 UTC; the agent stamps the receive time when it is missing). The agent adds `schema`,
`id`, `host` and `sensor`, validates the result against `contracts/event.schema.json`, and
publishes it; a sensor never talks to Kafka.

Life cycle, driven by the agent (each sensor runs in its own thread):

    sensor = SomeSensor(options)          # options: the sensor's block of agent.yaml
    missing = sensor.check()              # [] when this host can run it, else what is missing
    sensor.start()                        # open resources (may raise SensorUnavailable)
    for event in sensor.events():         # blocks; ends soon after stop() is called
        ...
    sensor.stop()                         # from another thread; events() then returns

`events()` should yield at least every `poll_s` seconds' worth of work and check `self.stopping`
between waits, so that stop() takes effect within about a second.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

Event = dict[str, Any]


class SensorUnavailable(RuntimeError):
    """The sensor cannot run on this host; the message says exactly what is missing."""


class Sensor:
    """Base class of every sensor. Subclasses set `name` and implement `events()`."""

    name: ClassVar[str] = "?"
    version: ClassVar[str] = "0.1.0"
    #: the event kinds this sensor can produce (used by rule-driven filtering)
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.stopping = threading.Event()
        # sensor-specific counters (e.g. "lost" samples of a kernel buffer); read by the agent
        self.counters: dict[str, int] = {}

    # -- life cycle -------------------------------------------------------------------------
    def check(self) -> list[str]:
        """What this host lacks to run the sensor (privileges, kernel features, files); [] = ok."""
        return []

    def start(self) -> None:
        """Acquire resources. Raise SensorUnavailable with a precise reason when that fails."""
        missing = self.check()
        if missing:
            raise SensorUnavailable(f"{self.name}: " + "; ".join(missing))

    def events(self) -> Iterator[Event]:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()

    # -- helpers ----------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)


class PollingSensor(Sensor):
    """A sensor that compares snapshots of the host every `interval_s` (procfs, netconn).

    start() takes the baseline snapshot and may leave events for it in `_backlog` (with
    `emit_existing`); events() yields those, then what each `poll_once()` finds.
    """

    interval_s: float

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._backlog: list[Event] = []
        self._started = False

    def events(self) -> Iterator[Event]:
        if not self._started:
            self.start()
        backlog, self._backlog = self._backlog, []
        yield from backlog
        while not self.stopping.wait(self.interval_s):
            yield from self.poll_once()

    def poll_once(self) -> list[Event]:
        """One snapshot against the previous one: the events since, in order."""
        raise NotImplementedError


def utc_now() -> str:
    """The current time as the contract's timestamp (microseconds, `Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_from_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
