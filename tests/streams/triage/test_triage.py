"""Triage of one alert through the gateway: records that match the contract, retries, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from sentinel.contracts import validate
from sentinel.kafka import free_port
from sentinel.settings import PROJECT_ROOT, Settings
from streams.triage.prompts import load_prompt, rule_metadata
from streams.triage.triage import GatewayTriage, wants_triage

ALERT = json.loads(
    (PROJECT_ROOT / "contracts/examples/valid/alert-curl-pipe-shell.json").read_text()
)
EVIDENCE = {"alert": ALERT, "rule": rule_metadata(ALERT["rule"]["id"])}


async def _triage_once(triage: GatewayTriage, alert: dict = ALERT) -> dict:
    try:
        return await triage.triage(alert, {**EVIDENCE, "alert": alert})
    finally:
        await triage.close()


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Iterator[Sleeps]:
    yield Sleeps()


def test_only_alerts_at_or_above_the_configured_severity_are_triaged() -> None:
    assert wants_triage({"severity": "critical"}, "high")
    assert wants_triage({"severity": "high"}, "high")
    assert not wants_triage({"severity": "medium"}, "high")
    assert wants_triage({"severity": "low"}, "low")
    assert not wants_triage({"severity": "bogus"}, "low")


def test_an_unreachable_gateway_is_retried_with_backoff_then_marked_failed(
    sleeps: Sleeps,
) -> None:
    settings = Settings(
        gateway_url=f"http://127.0.0.1:{free_port()}",
        triage_max_attempts=4,
        triage_retry_backoff_s=0.5,
    )
    triage = GatewayTriage(settings, load_prompt("triage-v1"), sleep=sleeps)
    record = asyncio.run(_triage_once(triage))
    validate("triage", record)
    assert record["status"] == "failed" and record["attempts"] == 4
    assert "gateway unreachable" in record["error"] and "after 4 attempts" in record["error"]
    assert record["verdict"] == "needs_review" and record["confidence"] == 0
    assert sleeps == [0.5, 1.0, 2.0], "doubling backoff between the four attempts"
    assert record["prompt"] == load_prompt("triage-v1").ref
    assert (record["alert_id"], record["rule_id"], record["host_id"]) == (
        ALERT["id"],
        "core.curl_pipe_shell",
        "h-017",
    )
    assert (triage.stats.failed, triage.stats.retries, triage.stats.triaged) == (1, 3, 0)
