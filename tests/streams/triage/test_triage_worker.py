"""A real worker with triage on: replayed attacks → alerts → triaged records in Kafka, through a
real gateway on loopback; and a gateway that is down delays nothing but triage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from sentinel.contracts import validate
from sentinel.kafka import ALERTS, ALERTS_TRIAGED, EVENTS, free_port
from sentinel.settings import Settings
from services.gateway.config import load_config
from services.gateway.server import GatewayHandle, serve_in_thread
from streams.triage.prompts import load_prompt
from streams.triage.triage import wants_triage
from tests.streams.conftest import StreamEnv

pytestmark = pytest.mark.kafka

KEY = "sk-test-triage-0123456789abcdef"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHandle]:
    settings = Settings(state_dir=tmp_path / "gateway-state", gateway_api_key=KEY)
    with serve_in_thread(load_config(settings), settings) as handle:
        yield handle


def _alerts(env: StreamEnv) -> dict[str, dict]:
    return {a["id"]: a for a in (orjson.loads(r.value) for r in env.read_all(ALERTS))}


def _wait_triaged(env: StreamEnv, wanted: set[str], timeout_s: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    triaged: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for record in env.read_all(ALERTS_TRIAGED):
            value = orjson.loads(record.value)
            assert record.key == value["alert_id"].encode()
            triaged[value["alert_id"]] = value
        if wanted <= triaged.keys():
            return triaged
        for worker in env.workers:
            worker.check_alive()
        time.sleep(1)
    raise AssertionError(f"{len(wanted - triaged.keys())} of {len(wanted)} alerts never triaged")


def _replay_attacks(env: StreamEnv) -> dict[str, dict]:
    events = list(generate("mixed", 4_000, seed=5))
    assert replay_to_kafka(events, env.settings, EVENTS).errors == 0
    env.wait_committed(len(events))
    alerts = _alerts(env)
    assert alerts, "the mixed scenario raises alerts"
    return alerts


def test_high_severity_alerts_are_triaged_with_prompt_and_model(
    stream_env: StreamEnv, gateway: GatewayHandle
) -> None:
    stream_env.env.update(
        SENTINEL_TRIAGE_ENABLED="true",
        SENTINEL_GATEWAY_URL=gateway.base_url,
        SENTINEL_GATEWAY_API_KEY=KEY,
    )
    worker = stream_env.worker().start()
    alerts = _replay_attacks(stream_env)
    wanted = {i for i, a in alerts.items() if wants_triage(a, "high")}
    assert wanted and len(wanted) < len(alerts), "some alerts are below the triage severity"
    triaged = _wait_triaged(stream_env, wanted)
    assert triaged.keys() == wanted, "only alerts at or above `high` are triaged"
    prompt = load_prompt("triage-v1")
    for alert_id, record in triaged.items():
        validate("triage", record)
        assert record["status"] == "triaged", record
        assert record["prompt"] == prompt.ref
        assert record["model"]["name"] == "extractive-triage"
        assert record["model"]["prompt_version"] == "triage-v1@1.0.0"
        assert record["model"]["provider"] == "extractive"
        assert record["model"]["fallback"] is False
        alert = alerts[alert_id]
        assert (record["rule_id"], record["host_id"]) == (alert["rule"]["id"], alert["host"]["id"])
        host = alert["host"].get("name") or alert["host"]["id"]
        assert host in record["summary"], "the summary names the alert's host"
        assert record["usage"]["prompt_tokens"] > 0
    verdicts = {r["verdict"] for r in triaged.values()}
    assert "true_positive" in verdicts
    health = worker.health()
    assert health["triage"]["triaged"] == len(wanted)
    assert health["triage"]["failed"] == 0


def test_a_gateway_that_is_down_fails_triage_but_not_alerting(stream_env: StreamEnv) -> None:
    stream_env.env.update(
        SENTINEL_TRIAGE_ENABLED="true",
        SENTINEL_GATEWAY_URL=f"http://127.0.0.1:{free_port()}",
        SENTINEL_TRIAGE_MAX_ATTEMPTS="2",
        SENTINEL_TRIAGE_RETRY_BACKOFF_S="0.1",
    )
    stream_env.worker().start()
    alerts = _replay_attacks(stream_env)
    wanted = {i for i, a in alerts.items() if wants_triage(a, "high")}
    triaged = _wait_triaged(stream_env, wanted)
    for record in triaged.values():
        validate("triage", record)
        assert record["status"] == "failed" and record["attempts"] == 2
        assert "gateway unreachable" in record["error"]
