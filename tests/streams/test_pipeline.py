"""The validate and detect stages in-process: dead letters, alert ids, suppression, hot reload."""

from __future__ import annotations

import copy
import json

import orjson
import pytest

from agents.scenarios import generate, malformed_records
from sentinel.contracts import validate
from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT
from streams.detection.alerts import Suppressor, build_alert
from streams.detection.pipeline import Detector, RawRecord
from streams.detection.ruleset import RuleSet
from streams.validation import DeadLetter, validate_record

CORE = PROJECT_ROOT / "rules" / "core"


def _records(values: list[bytes]) -> list[RawRecord]:
    return [RawRecord(b"k", v, "sentinel.events.v1", 2, 100 + i) for i, v in enumerate(values)]


@pytest.fixture
def detector() -> Detector:
    ruleset = RuleSet()
    ruleset.load_dir(PROJECT_ROOT / "rules")
    return Detector(ruleset, max_event_bytes=4096)


def test_every_malformed_record_becomes_a_dead_letter_with_reason_and_source() -> None:
    bad = malformed_records(16, seed=3)
    for offset, value in enumerate(bad):
        result = validate_record(
            b"key", value, topic="t", partition=4, offset=offset, max_bytes=65536
        )
        assert isinstance(result, DeadLetter), value
        headers = dict(result.headers())
        assert headers["stage"] == b"validate" and headers["source-topic"] == b"t"
        assert (
            headers["source-partition"] == b"4" and headers["source-offset"] == str(offset).encode()
        )
        assert result.value == value and result.key == b"key", "original bytes untouched"
        assert headers["error"], "a reason"


def test_oversized_and_empty_records_are_dead_letters() -> None:
    event = next(generate("baseline", 1))
    big = orjson.dumps(dict(event, padding="x" * 5000))
    too_big = validate_record(None, big, topic="t", partition=0, offset=1, max_bytes=4096)
    assert isinstance(too_big, DeadLetter) and "exceeds the 4096-byte limit" in too_big.error
    empty = validate_record(None, None, topic="t", partition=0, offset=2, max_bytes=4096)
    assert isinstance(empty, DeadLetter) and "empty record" in empty.error


def test_contract_errors_name_the_field_in_the_dead_letter() -> None:
    event = next(generate("baseline", 1))
    del event["host"]["id"]
    result = validate_record(
        None, orjson.dumps(event), topic="t", partition=0, offset=0, max_bytes=65536
    )
    assert isinstance(result, DeadLetter)
    assert result.error == "event: field 'host.id': required field is missing"


def test_batch_splits_into_valid_events_and_dead_letters_exactly(detector: Detector) -> None:
    good = [orjson.dumps(e) for e in generate("mixed", 3000, seed=5)]
    bad = malformed_records(9, seed=5)
    values = good[:1000] + bad[:4] + good[1000:] + bad[4:]
    outcome = detector.detect(detector.validate(_records(values)))
    assert len(outcome.events) == 3000 and len(outcome.dead) == 9
    assert sorted(d.value for d in outcome.dead) == sorted(bad)
    for alert in outcome.alerts:
        validate("alert", alert)


def test_alert_ids_are_deterministic_across_detectors_and_batch_sizes() -> None:
    events = [orjson.dumps(e) for e in generate("mixed", 12000, seed=8)]

    def run(batch: int) -> dict[str, dict]:
        ruleset = RuleSet()
        ruleset.load_dir(PROJECT_ROOT / "rules")
        det = Detector(ruleset, max_event_bytes=65536)
        alerts: dict[str, dict] = {}
        for i in range(0, len(events), batch):
            for a in det.detect(det.validate(_records(events[i : i + batch]))).alerts:
                alerts[a["id"]] = a
        return alerts

    one, other = run(1000), run(137)
    assert one.keys() == other.keys() and len(one) > 5
    assert {a["count"] for a in one.values()} == {a["count"] for a in other.values()}


def test_suppression_folds_repeats_into_one_alert_with_a_count() -> None:
    pack = load_pack(CORE)
    rule = pack.rule("core.exec_from_tmp")
    base = json.loads((PROJECT_ROOT / "contracts/examples/valid/event-proc-exec.json").read_text())
    base["proc"]["exe"] = "/tmp/x"
    suppressor = Suppressor()
    alerts = []
    for i in range(5):
        event = copy.deepcopy(base)
        event["id"] = f"e{i}"
        event["ts"] = f"2026-12-03T08:0{i}:00Z"  # five minutes, inside one 3600 s window
        alerts.append(build_alert({"context": {}}, event, pack, rule, engine_version="t"))
        suppressor.add(alerts[-1])
    assert len({a["id"] for a in alerts}) == 1
    drained = suppressor.drain()
    assert len(drained) == 1 and drained[0]["count"] == 5
    assert drained[0]["event_ids"] == [f"e{i}" for i in range(5)]
    assert suppressor.drain() == [], "nothing new, nothing to republish"
    later = copy.deepcopy(base)
    later["ts"] = "2026-12-03T09:00:00Z"  # next window: a new alert
    suppressor.add(build_alert({"context": {}}, later, pack, rule, engine_version="t"))
    assert [a["count"] for a in suppressor.drain()] == [1]
    validate("alert", drained[0])


def test_alert_has_provenance_rule_hash_and_dedup_key() -> None:
    pack = load_pack(CORE)
    rule = pack.rule("core.shadow_access")
    event = json.loads((PROJECT_ROOT / "contracts/examples/valid/event-proc-exec.json").read_text())
    alert = build_alert(
        {"context": {"a": 1}, "severity": "critical"},
        event,
        pack,
        rule,
        engine_version="0.1.0",
        enrichment_snapshot="ti:abc",
    )
    assert alert["rule"] == {
        "id": "core.shadow_access",
        "version": pack.version,
        "hash": rule.sha256,
    }
    assert alert["severity"] == "critical" and alert["mitre"] == ["T1003.008"]
    assert alert["dedup_key"] == "h-017|www-data"
    assert alert["provenance"] == {
        "pack": "core",
        "pack_version": pack.version,
        "engine_version": "0.1.0",
        "enrichment_snapshot": "ti:abc",
    }
    validate("alert", alert)


def test_hot_reload_applies_newer_packs_and_rejects_broken_or_older_ones() -> None:
    ruleset = RuleSet()
    ruleset.load_dir(PROJECT_ROOT / "rules")
    message = load_pack(CORE).message()
    assert not ruleset.offer(orjson.dumps(message)).applied  # same version, same content

    newer = copy.deepcopy(message)
    newer["version"] = "1.0.1"
    newer["rules"].append(
        {
            "id": "core.marker",
            "title": "marker",
            "severity": "low",
            "kinds": ["proc"],
            "source": "emit(#{});",
        }
    )
    offer = ruleset.offer(orjson.dumps(newer))
    assert offer.applied, offer.reason
    assert "core.marker" in ruleset.rules and ruleset.packs["core"].version == "1.0.1"

    broken = copy.deepcopy(newer)
    broken["version"] = "1.0.2"
    broken["rules"][-1]["source"] = "emit(#{ title: );"
    offer = ruleset.offer(orjson.dumps(broken))
    assert not offer.applied and "core.marker" in offer.reason and "line 1" in offer.reason
    assert ruleset.packs["core"].version == "1.0.1", "old rules keep running"

    older = copy.deepcopy(message)
    older["version"] = "0.9.0"
    assert "older" in ruleset.offer(orjson.dumps(older)).reason
    assert "rejected" in ruleset.offer(b"{not json").reason
    assert "rejected" in ruleset.offer(orjson.dumps({"schema": "sentinel.rule-pack/1"})).reason


def test_the_engine_sees_each_event_with_its_enrichment_whatever_its_original_bytes() -> None:
    import asyncio

    from streams.detection.pipeline import engine_payload
    from streams.enrichment import Enricher

    events = list(generate("mixed", 400, seed=9))
    values = [orjson.dumps(e) for e in events]
    values[3] = json.dumps(events[3], indent=2).encode()  # spans lines: re-encoded
    values[4] = orjson.dumps(events[4]) + b" \r\n "  # trailing whitespace
    own = dict(events[5], enrichment={"geo": {"country": "NL"}})
    values[5] = orjson.dumps(own)  # arrives with an enrichment object of its own
    detector = Detector(RuleSet(), max_event_bytes=65536)
    outcome = detector.validate(_records(values))
    assert len(outcome.events) == 400
    asyncio.run(Enricher.from_defaults().enrich_batch(outcome.events))
    assert sum("enrichment" in e for e in outcome.events) == 400, "every event has a host"

    lines = engine_payload(outcome.events, outcome.raw).split(b"\n")

    assert len(lines) == 400
    assert [orjson.loads(line) for line in lines] == outcome.events
    assert set(orjson.loads(lines[5])["enrichment"]) == {"geo", "host"}
    spliced = orjson.loads(lines[0])
    assert spliced["enrichment"]["host"] and spliced["id"] == events[0]["id"]
