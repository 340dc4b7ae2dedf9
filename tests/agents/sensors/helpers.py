"""Run a real sensor in a thread for a test: collect its events, wait for one, stop and join.

    with running(SomeSensor(options)) as run:
        ...  # do something on the host
        event = run.wait_for(lambda e: e["proc"]["pid"] == pid, timeout=5)
    # here the sensor has been stopped and its thread joined (within `stop_timeout`)

`wait_until(found, timeout)` waits on the whole list instead (`found(events)` truthy), and
`stop()` stops early, returning how long events() took to return.

`running` calls `sensor.start()` in the caller's thread (so SensorUnavailable surfaces there and
the baseline is taken before the body runs), then iterates `sensor.events()` in a daemon thread.
An exception inside `events()` is re-raised by `wait_for` and on exit. `assert_contract` checks
collected partial events against contracts/event.schema.json once completed the way the agent
completes them.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from agents.sensors.base import Event, Sensor, utc_now
from sentinel import contracts


class Running:
    """A sensor whose events() runs in a thread; `events` fills up as they come."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.stop_took: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"sensor-{sensor.name}", daemon=True)

    def _run(self) -> None:
        try:
            for event in self.sensor.events():
                self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def _raise_error(self) -> None:
        if self.error is not None:
            raise AssertionError(
                f"{self.sensor.name}.events() failed: {self.error!r}"
            ) from self.error

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first collected event (old or new) for which `predicate` is true; AssertionError
        listing what was seen when none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            seen = list(self.events)
            for event in seen[checked:]:
                try:
                    if predicate(event):
                        return event
                except (KeyError, TypeError, IndexError):
                    continue
            checked = len(seen)
            self._raise_error()
            if time.monotonic() >= deadline or not self.thread.is_alive():
                break
            time.sleep(0.02)
        shown = "\n  ".join(repr(e)[:300] for e in seen[-40:]) or "(nothing)"
        state = "running" if self.thread.is_alive() else "ended"
        raise AssertionError(
            f"{self.sensor.name} ({state}): no matching event within {timeout:.1f}s; "
            f"{len(seen)} seen, the last ones:\n  {shown}"
        )

    def wait_until(self, found: Callable[[list[Event]], Any], timeout: float = 5.0) -> Any:
        """Wait until `found(events so far)` is truthy and return it; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._raise_error()
            result = found(list(self.events))
            if result:
                return result
            if time.monotonic() >= deadline:
                shown = "\n  ".join(repr(e)[:300] for e in self.events[-40:]) or "(nothing)"
                raise AssertionError(
                    f"{self.sensor.name}: condition not met within {timeout:.1f}s; "
                    f"{len(self.events)} seen, the last ones:\n  {shown}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 3.0) -> float:
        """Stop the sensor and join its thread (once); seconds events() took to return."""
        if self.stop_took is None:
            began = time.monotonic()
            self.sensor.stop()
            self.thread.join(timeout)
            self.stop_took = time.monotonic() - began
            assert not self.thread.is_alive(), (
                f"{self.sensor.name}: events() did not return within {timeout}s of stop()"
            )
        self._raise_error()
        return self.stop_took

    def matching(self, predicate: Callable[[Event], bool]) -> list[Event]:
        """Every collected event for which `predicate` is true (no waiting)."""
        found = []
        for event in list(self.events):
            try:
                if predicate(event):
                    found.append(event)
            except (KeyError, TypeError, IndexError):
                continue
        return found

    def assert_contract(self) -> None:
        assert_contract(self.sensor, self.events)


def complete(sensor: Sensor, event: Event) -> dict[str, Any]:
    """The event as the agent publishes it (schema, id, host, sensor, ts added)."""
    return {
        "schema": "sentinel.event/1",
        "id": uuid.uuid4().hex,
        "host": {"id": "test-host", "os": "linux"},
        "sensor": {"name": sensor.name, "version": sensor.version},
        "ts": utc_now(),
        **event,
    }


def assert_contract(sensor: Sensor, events: Iterable[Event]) -> None:
    bad = []
    for event in events:
        found = contracts.errors("event", complete(sensor, event))
        if found:
            bad.append(f"{event!r}: {found}")
    assert not bad, f"{len(bad)} event(s) break the event contract:\n  " + "\n  ".join(bad[:20])


@contextmanager
def running(sensor: Sensor, *, start: bool = True, stop_timeout: float = 3.0) -> Iterator[Running]:
    """Start `sensor` (unless `start` is false: already started), run its events() in a thread,
    yield a Running; stop and join on exit."""
    if start:
        sensor.start()
    run = Running(sensor)
    run.thread.start()
    try:
        yield run
    finally:
        run.stop(stop_timeout)


def sh(*cmd: str) -> str:
    """Run a command (ip, ...) and return its output; AssertionError with stderr on failure."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr.strip()}"
    return done.stdout
