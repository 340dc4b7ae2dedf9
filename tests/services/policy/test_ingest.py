"""POST /ingest: valid events reach the events topic keyed by host; bad ones are named one by one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from agents.scenarios import generate
from sentinel.kafka import offsets
from sentinel.settings import Settings
from tests.services.policy.policytest import ADMIN_KEY, Service, policy_settings, serve


def test_a_mixed_batch_produces_the_valid_events_and_names_each_bad_one(
    service: Service, team: dict[str, str]
) -> None:
    events = list(generate("mixed", 50, seed=3))
    bad = [dict(events[7], ts="yesterday"), {"schema": "sentinel.event/1"}, "not an object"]
    del bad[0]["id"]
    batch = events[:10] + bad + events[10:]
    with service.client(team["agent-1"]) as agent:
        answer = agent.post("/ingest", json={"events": batch})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 50 and body["rejected"] == 3
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (10, "id"),
        (11, "id"),
        (12, ""),
    ]
    assert body["errors"][0]["reason"] == "required field is missing"
    records = offsets.read_from(service.settings, service.settings.policy_events_topic)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(e["id"] for e in events)
    assert all(r.key.decode() == orjson.loads(r.value)["host"]["id"] for r in records)


def test_a_body_that_is_not_a_batch_is_a_422(service: Service, team: dict[str, str]) -> None:
    with service.client(team["agent-1"]) as agent:
        answer = agent.post(
            "/ingest", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422 and answer.json()["detail"].startswith(
            "the body is not JSON"
        )
        answer = agent.post("/ingest", json=[1, 2])
        assert answer.status_code == 422 and "events" in answer.json()["detail"]


def test_oversized_bodies_and_batches_are_413(
    tmp_path: Path, kafka: Settings, new_topic: Callable[..., str]
) -> None:
    settings = policy_settings(
        tmp_path,
        kafka,
        policy_events_topic=new_topic(prefix="test-events"),
        policy_ingest_max_bytes=4096,
        policy_ingest_max_events=5,
        policy_upload_max_bytes=2048,
    )
    events = list(generate("mixed", 30, seed=4))
    with serve(settings) as service, service.client(ADMIN_KEY) as admin:
        too_big = admin.post("/ingest", json={"events": events})
        assert too_big.status_code == 413
        assert too_big.json()["detail"] == "the request body is larger than 4,096 bytes"

        def chunks() -> object:  # no content-length: the limit is counted while reading
            yield orjson.dumps({"events": events})

        streamed = admin.post("/ingest", content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413
        too_many = admin.post("/ingest", json={"events": events[:6]})
        assert too_many.status_code == 413 and too_many.json()["detail"] == (
            "6 events in one batch; at most 5"
        )
        upload = admin.post("/packs", json={"name": "x", "description": "d" * 3000})
        assert upload.status_code == 413
        assert admin.post("/ingest", json={"events": events[:5]}).json()["accepted"] == 5
