"""`scenario`: the scenario generator as a sensor, paced in real time.

For demos, drills and tests of the agent itself (spool, outages, filters): it yields the
generator's events (their `kind`, the kind's object and `labels`) at `rate` events per second,
stamped with the current time (`count` events, a million by default), so the agent treats them exactly like observed ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from agents.scenarios import generate
from agents.sensors.base import Event, Sensor

_DROP = ("schema", "id", "ts", "host", "sensor")


class ScenarioSensor(Sensor):
    name = "scenario"
    version = "0.1.0"
    kinds = ("proc", "file", "net", "dns", "auth")

    def check(self) -> list[str]:
        rate = self.option("rate", 100.0)
        if not isinstance(rate, int | float) or rate <= 0:
            return [f"option 'rate' must be a positive number of events per second, got {rate!r}"]
        return []

    def events(self) -> Iterator[Event]:
        rate = float(self.option("rate", 100.0))
        count = self.option("count", None)
        total = int(count) if count is not None else 1_000_000
        source = generate(
            str(self.option("scenario", "baseline")),
            total,
            hosts=int(self.option("hosts", 1)),
            seed=int(self.option("seed", 0)),
            events_per_second=rate,
        )
        started = time.monotonic()
        for sent, event in enumerate(source):
            if self.stopping.is_set():
                return
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0.005 and self.stopping.wait(ahead):  # sleep in bursts of >= 5 ms
                return
            self.count("generated")
            yield {k: v for k, v in event.items() if k not in _DROP}
