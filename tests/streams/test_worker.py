"""Real workers on a real broker: the whole mixed scenario, hot reload, and crashes mid-replay."""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from kafka import KafkaProducer

from agents.replay import replay_to_kafka
from agents.scenarios import ATTACKS, generate, malformed_records
from sentinel.contracts import validate
from sentinel.kafka import ALERTS, EVENTS, EVENTS_DLQ, RULES
from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT, Settings
from streams.detection.pipeline import RawRecord
from streams.runtime import Runtime
from tests.rules.test_core_pack import EXPECTED
from tests.streams.conftest import StreamEnv, Worker

pytestmark = pytest.mark.kafka


def _latest_alerts(env: StreamEnv) -> dict[str, dict]:
    """The alert topic folded by id: the last record of an id is its current state."""
    alerts: dict[str, dict] = {}
    for record in env.read_all(ALERTS):
        alert = orjson.loads(record.value)
        assert record.key == alert["id"].encode()
        alerts[alert["id"]] = alert
    return alerts


def _mixed_with_malformed(count: int, bad: int, seed: int) -> tuple[list[dict], list[bytes], list]:
    events = list(generate("mixed", count, seed=seed))
    malformed = malformed_records(bad, seed=seed)
    step = count // (bad + 1)
    records: list = []
    for i, event in enumerate(events):
        records.append(event)
        if (i + 1) % step == 0 and len(records) - i - 1 < bad:
            records.append(malformed[len(records) - i - 2])
    return events, malformed, records


def test_mixed_replay_raises_every_attack_and_loses_nothing(stream_env: StreamEnv) -> None:
    worker = stream_env.worker().start()
    events, malformed, records = _mixed_with_malformed(40_000, 7, seed=23)
    assert sum(isinstance(r, bytes) for r in records) == 7
    summary = replay_to_kafka(records, stream_env.settings, EVENTS)
    assert summary.errors == 0
    stream_env.wait_committed(len(records))
    health = worker.wait(lambda h: h["events"] >= len(records))
    assert (health["events"], health["valid"], health["dead_letters"]) == (len(records), 40_000, 7)

    dead = stream_env.read_all(EVENTS_DLQ)
    assert len(dead) == 7, "every malformed record, once"
    assert sorted(r.value for r in dead) == sorted(malformed), "original bytes untouched"
    sources = {(r.partition, r.offset): r.value for r in stream_env.read_all(EVENTS)}
    assert len(sources) == len(records), "events in = valid processed + dead letters"
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["stage"] == "validate" and headers["source-topic"] == EVENTS
        assert headers["error"]
        origin = (int(headers["source-partition"]), int(headers["source-offset"]))
        assert sources[origin] == record.value, "headers point at the original record"

    alerts = _latest_alerts(stream_env)
    labels = {e["id"]: e["labels"] for e in events}
    fired: dict[str, set[str]] = defaultdict(set)
    for alert in alerts.values():
        validate("alert", alert)
        scenarios = {labels[i]["scenario"] for i in alert["event_ids"]}
        for scenario in scenarios:
            fired[scenario].add(alert["rule"]["id"])
        if scenarios == {"baseline"}:
            assert alert["severity"] not in ("high", "critical"), alert
    for attack in ATTACKS:
        missing = EXPECTED[attack] - fired[attack]
        assert not missing, f"{attack}: no alert from {sorted(missing)}"

    want = sum(e["host"]["id"] == "h-004" for e in events)
    # Host counters are flushed to the table once a second; on a fresh broker the table's topic
    # may only be assigned at the first metadata refresh (5 s) and the rebalance after it.
    deadline = time.monotonic() + 45
    while True:
        status, stats = worker.get("/hosts/h-004/stats")
        if (status == 200 and stats["events"] == want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and stats["events"] == want, stats
    assert worker.get("/hosts/h-999/stats")[0] == 404


def _marker_pack(version: str, source: str) -> bytes:
    message = load_pack(PROJECT_ROOT / "rules" / "core").message()
    message["version"] = version
    message["rules"].append(
        {
            "id": "core.hot_reload_marker",
            "title": "hot reload marker",
            "severity": "low",
            "kinds": ["proc"],
            "mitre": ["T1059"],
            "source": source,
        }
    )
    return orjson.dumps(message)


def _marker_event(n: int) -> dict:
    event = copy.deepcopy(next(generate("baseline", 1, seed=n)))
    event["id"] = f"marker-{n}"
    event["kind"] = "proc"
    event.pop("net", None), event.pop("file", None), event.pop("dns", None), event.pop("auth", None)
    event["proc"] = {
        "action": "exec",
        "pid": 1000 + n,
        "exe": "/usr/bin/true",
        "cmdline": f"true sentinel-marker-{n}",
    }
    return event


def test_hot_reload_swaps_rules_without_restart_and_rejects_broken_packs(
    stream_env: StreamEnv,
) -> None:
    worker = stream_env.worker().start()
    pid = worker.proc.pid if worker.proc else None
    marker_rule = (
        'if event.proc.cmdline.contains("sentinel-marker") { emit(#{ context: #{ n: 1 } }); }'
    )
    replay_to_kafka([_marker_event(1)], stream_env.settings, EVENTS)
    stream_env.wait_committed(1)

    producer = KafkaProducer(bootstrap_servers=stream_env.settings.kafka_bootstrap)
    producer.send(RULES, key=b"core", value=_marker_pack("1.1.0", marker_rule)).get(30)
    worker.wait(lambda h: h["packs"].get("core") == "1.1.0" and h["rules"] == 21)
    replay_to_kafka([_marker_event(2)], stream_env.settings, EVENTS)
    stream_env.wait_committed(2)

    producer.send(RULES, key=b"core", value=_marker_pack("1.2.0", "emit(#{ title: );")).get(30)
    producer.flush()
    deadline = time.monotonic() + 30  # the worker reads the rules topic in the background
    while "rule pack rejected" not in worker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "rule pack rejected" in worker.log.read_text()
    health = worker.health()
    assert health["packs"]["core"] == "1.1.0", "the broken pack was rejected"
    replay_to_kafka([_marker_event(3)], stream_env.settings, EVENTS)
    stream_env.wait_committed(3)

    marker_alerts = [
        a
        for a in _latest_alerts(stream_env).values()
        if a["rule"]["id"] == "core.hot_reload_marker"
    ]
    assert sorted(i for a in marker_alerts for i in a["event_ids"]) == ["marker-2", "marker-3"]
    assert worker.proc is not None and worker.proc.pid == pid and worker.proc.poll() is None
    log = worker.log.read_text()
    assert "rule pack rejected" in log and "core.hot_reload_marker" in log and "line 1" in log


def _expected_alert_ids(records: list) -> set[str]:
    """What an undisturbed run must publish: the worker's own pipeline, in-process, in order."""
    rt = Runtime(Settings())
    ids: set[str] = set()
    raw = [orjson.dumps(r) for r in records]
    for i in range(0, len(raw), 1000):
        batch = [RawRecord(None, v, EVENTS, 0, i + j) for j, v in enumerate(raw[i : i + 1000])]
        ids.update(a["id"] for a in asyncio.run(rt.process(batch)).alerts)
    return ids


def _wait_committed(env: StreamEnv, worker: Worker, total: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while (done := env.committed()) < total:
        worker.check_alive()
        assert time.monotonic() < deadline, (
            f"only {done} of {total} events committed; see {env.logs}"
        )
        time.sleep(0.5)


def test_sigkill_twice_mid_replay_publishes_the_same_alert_set(stream_env: StreamEnv) -> None:
    events = list(generate("mixed", 100_000, seed=29))
    expected = _expected_alert_ids(events)
    assert len(expected) > 20

    worker = stream_env.worker("crash").start()
    kills = 0
    with ThreadPoolExecutor(1) as pool:
        replay = pool.submit(replay_to_kafka, events, stream_env.settings, EVENTS, rate=8000)
        for threshold in (25_000, 60_000):
            _wait_committed(stream_env, worker, threshold)
            worker.kill(signal.SIGKILL)
            kills += 1
            worker = stream_env.worker("crash").start()
        assert replay.result().errors == 0
    _wait_committed(stream_env, worker, len(events))
    health = worker.wait(lambda h: h["warmed_events"] > 0 or h["events"] > 0)
    assert kills == 2 and health["warmed_events"] > 0, "the restarted worker rebuilt its windows"

    published = set(_latest_alerts(stream_env))
    assert published == expected, (
        f"missing {len(expected - published)}, unexpected {len(published - expected)}"
    )


def test_a_second_worker_takes_over_partitions_and_nothing_is_lost(stream_env: StreamEnv) -> None:
    """Rebalances both ways: a worker joins mid-replay, then the first one stops (SIGTERM).

    The replay is paced (30 s) so that both workers see events of their own partitions."""
    events = list(generate("mixed", 60_000, seed=31))
    expected = _expected_alert_ids(events)
    first = stream_env.worker("first").start()
    first.wait(lambda h: len(h["partitions"]) == stream_env.settings.kafka_partitions)
    with ThreadPoolExecutor(1) as pool:
        replay = pool.submit(replay_to_kafka, events, stream_env.settings, EVENTS, rate=2000)
        _wait_committed(stream_env, first, 10_000)
        second = stream_env.worker("second").start()
        split = second.wait(lambda h: h["partitions"] and h["events"] > 0, timeout_s=120)
        shared = first.health()["partitions"]
        partitions = list(range(stream_env.settings.kafka_partitions))
        assert sorted(shared + split["partitions"]) == partitions
        _wait_committed(stream_env, second, 35_000)
        first.stop()  # leaves the group after publishing and committing its batch in flight
        assert replay.result().errors == 0
    _wait_committed(stream_env, second, len(events))
    health = second.wait(lambda h: len(h["partitions"]) == stream_env.settings.kafka_partitions)
    assert health["warmed_events"] > 0, "taken-over partitions were warmed before processing"

    published = set(_latest_alerts(stream_env))
    assert published == expected, (
        f"missing {len(expected - published)}, unexpected {len(published - expected)}"
    )
