"""Deterministic scenario generator: `sentinel.event/1` streams of a simulated fleet, labelled.

Scenarios
---------
``baseline``
    A fleet of ``hosts`` hosts (web servers with nginx or Apache, databases, developer
    workstations, build servers, one bastion) doing ordinary work: shells and commands, package
    managers, cron jobs, served requests, outbound connections, DNS lookups, logins and sudo by
    admins, log and source file writes. It is built to raise no alert from the detection rules.
``curl-pipe-shell``, ``reverse-shell``, ``dns-tunnel``, ``ssh-bruteforce``, ``ransomware-writes``,
``crypto-miner``, ``cred-access``, ``persistence-cron``
    Baseline traffic with ``1 + count // 5000`` episodes of that attack, each on one victim
    host. Episode events replace baseline events, so a run still has ``count`` events.
    Episodes keep their own real-time pacing (a brute force takes about a minute and a half of
    event time) and are placed so that they end inside the run's expected span, about
    ``count / events_per_second`` seconds. A run too short to hold an episode truncates it:
    the part past the last event is dropped (at 200 events/s, 1,000 events are 5 s).
``mixed``
    Baseline plus episodes of all eight attacks: ``max(8, 1 + count // 5000)`` episodes, every
    attack at least once, each attack event labelled with its own attack's name.

Every event carries ``labels``: ``scenario`` (``"baseline"`` for benign events, else the attack's
name), ``attack`` and, for attack events, ``technique`` (a MITRE ATT&CK id). Output depends only
on the arguments: the same arguments give the same events, ids included.

    for event in generate("ssh-bruteforce", 20_000, seed=7):
        producer.send(topic, event)
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agents.scenarios.attacks import ATTACK_TABLE, Attack, Episode
from agents.scenarios.baseline import Baseline
from agents.scenarios.fleet import Host, Obj, build_fleet
from agents.scenarios.ids import DEFAULT_START, stamper, to_micros
from agents.scenarios.malformed import malformed_records

__all__ = [
    "ATTACKS",
    "DEFAULT_START",
    "SCENARIOS",
    "UnknownScenarioError",
    "generate",
    "malformed_records",
]

ATTACKS: tuple[str, ...] = tuple(ATTACK_TABLE)
SCENARIOS: tuple[str, ...] = ("baseline", *ATTACKS, "mixed")
SCHEMA = "sentinel.event/1"
SENSOR_VERSION = "0.1.0"
SENSORS = {"proc": "procfs", "file": "inotify", "net": "ebpf", "dns": "dns", "auth": "journald"}
EVENTS_PER_EPISODE = 5_000
_NEVER = 1 << 62  # sentinel start offset after the last planned episode


class UnknownScenarioError(ValueError):
    """Raised for a scenario name that is not in `SCENARIOS`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}")
        self.name = name


def generate(
    scenario: str,
    count: int,
    *,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    hosts: int = 20,
    events_per_second: float = 200.0,
) -> Iterator[dict[str, Any]]:
    """Yield exactly `count` labelled events of `scenario`, in non-decreasing `ts` order.

    `events_per_second` is the fleet's rate in event time (timestamps), not a wall-clock rate.
    Arguments are checked here, before the first event is asked for.
    """
    if scenario not in SCENARIOS:
        raise UnknownScenarioError(scenario)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if isinstance(hosts, bool) or not isinstance(hosts, int) or hosts < 1:
        raise ValueError(f"hosts must be an integer >= 1, got {hosts!r}")
    if not (
        isinstance(events_per_second, int | float)
        and math.isfinite(events_per_second)
        and events_per_second > 0
    ):
        raise ValueError(
            f"events_per_second must be a finite number > 0, got {events_per_second!r}"
        )
    return _stream(scenario, count, seed, to_micros(start), hosts, float(events_per_second))


def _episodes(scenario: str, count: int, rng: random.Random) -> list[Attack]:
    n = 1 + count // EVENTS_PER_EPISODE
    if scenario == "mixed":
        chosen = [ATTACK_TABLE[name] for name in ATTACKS]
        rng.shuffle(chosen)
        chosen += [ATTACK_TABLE[rng.choice(ATTACKS)] for _ in range(n - len(chosen))]
        return chosen
    return [ATTACK_TABLE[scenario]] * n


def _plan(attacks: list[Attack], count: int, mean_us: float, rng: random.Random) -> list[int]:
    """Start offsets (µs) spreading the episodes over the run so each can end before it does."""
    baseline_events = max(0, count - sum(a.events for a in attacks))
    span = baseline_events * mean_us
    starts = []
    for i, attack in enumerate(attacks):
        room = span - attack.duration_s * 1e6
        # An episode longer than the whole run starts it, for the best chance to complete.
        starts.append(int(room * (i + rng.random()) / len(attacks)) if room > 0 else 0)
    return starts


def _stream(
    scenario: str, count: int, seed: int, t0: int, hosts: int, eps: float
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    fleet = build_fleet(hosts, rng)
    baseline = Baseline(fleet, rng)
    mean_us = 1e6 / eps
    attacks = [] if scenario == "baseline" else _episodes(scenario, count, rng)
    plan = sorted(zip(_plan(attacks, count, mean_us, rng), range(len(attacks)), strict=True))
    plan.append((_NEVER, -1))
    next_plan = 0
    # Attack events not yet emitted, by time: (ts µs, tie-break, host, kind, object, labels).
    pending: list[tuple[int, int, Host, str, Obj, dict[str, Any]]] = []
    seq = 0
    # Hot loop: locals only, the baseline pick inlined (this runs 100k+ times a second).
    stamp = stamper(rng)
    random_ = rng.random
    schedule = baseline.schedule
    n_schedule = len(schedule)
    refill = baseline.refill
    t = t0  # event time (µs) of the next baseline event
    elapsed = 0.0  # unrounded µs since t0, so the mean spacing stays exact at high rates
    for _ in range(count):
        while t0 + plan[next_plan][0] <= t:
            offset, index = plan[next_plan]
            next_plan += 1
            attack = attacks[index]
            episode = Episode(fleet.pick(rng, *attack.roles), rng, attack.technique)
            attack.build(episode)
            for dt, kind, obj, technique in episode.events:
                seq += 1
                labels = {"scenario": attack.name, "attack": True, "technique": technique}
                heapq.heappush(pending, (t0 + offset + dt, seq, episode.host, kind, obj, labels))
        if pending and pending[0][0] <= t:
            us, _, host, kind, obj, labels = heapq.heappop(pending)
        else:
            host = schedule[int(random_() * n_schedule)]
            queue = host.pending
            if not queue:
                refill(host, t)
            kind, obj = queue.popleft()
            us, labels = t, {"scenario": "baseline", "attack": False}
            # Jittered spacing with the requested mean: uniform in [0.5, 1.5) x mean.
            elapsed += mean_us * (0.5 + random_())
            t = t0 + int(elapsed)
        event_id, ts = stamp(us)
        ref = host.ref
        yield {
            "schema": SCHEMA,
            "id": event_id,
            "ts": ts,
            "host": {"id": ref["id"], "name": ref["name"], "os": "linux"},
            "sensor": {"name": SENSORS[kind], "version": SENSOR_VERSION},
            "kind": kind,
            kind: obj,
            "labels": labels,
        }
