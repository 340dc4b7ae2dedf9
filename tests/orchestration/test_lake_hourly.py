"""`lake_hourly` in process on the real broker: land, dbt silver and gold, blocking gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from kafka import KafkaProducer

from tests.dbt.lakefixture import (
    ALERT_ROLLUP_COLUMNS,
    ALERTS,
    DEAD_LETTERS,
    DISTINCT_ALERT_IDS,
    DISTINCT_EVENT_IDS,
    DNS_DOMAIN_COLUMNS,
    EVENTS,
    EXPECTED_ALERT_ROLLUP,
    EXPECTED_DNS_DOMAINS,
    EXPECTED_HOST_ACTIVITY,
    HOST_ACTIVITY_COLUMNS,
)
from tests.orchestration.conftest import Lake

pytestmark = pytest.mark.kafka

# The fixed records are from 2026-12-03: freshness is not what these tests are about.
TIMELESS = {"lake_freshness_hours": 1e6}
GOLD = ("host_activity_5m", "dns_domain_stats", "alert_rollup_daily")


def _produce_fixture(lake: Lake) -> None:
    lake.produce(list(EVENTS))
    lake.produce(list(ALERTS), "alerts")
    producer = KafkaProducer(bootstrap_servers=lake.settings.kafka_bootstrap)
    for d in DEAD_LETTERS:
        producer.send(lake.topics["dlq"], key=d.key, value=d.value, headers=d.headers())
    producer.flush()
    producer.close()


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key
    }


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_lake_hourly_builds_gold_equal_to_the_hand_computed_rows(lake: Lake) -> None:
    _produce_fixture(lake)

    result = lake.run(**TIMELESS)

    assert result.success
    assert {"bronze_events", "silver_events", *GOLD} <= _materialized(result)
    # after the gates, Feast: the export and the online store (docs/models.md)
    assert {"feast_repository", "online_features"} <= _materialized(result)
    checks = _checks(result)
    gates = {n for n in checks if n.endswith("_quality_check")}
    assert gates == {
        "silver_events_quality_check",
        "silver_dns_events_quality_check",
        "silver_alerts_quality_check",
        "host_activity_5m_quality_check",
        "host_features_5m_quality_check",
        "dns_domain_stats_quality_check",
        "alert_rollup_daily_quality_check",
    }
    assert all(c.passed for c in checks.values()), [n for n, c in checks.items() if not c.passed]

    assert len(lake.bronze("events")) == len(EVENTS) == DISTINCT_EVENT_IDS + 1
    assert lake.query("SELECT count(*), count(DISTINCT event_id) FROM silver.silver_events") == [
        (DISTINCT_EVENT_IDS, DISTINCT_EVENT_IDS)
    ]
    assert lake.query("SELECT count(*) FROM silver.silver_alerts") == [(DISTINCT_ALERT_IDS,)]
    assert lake.query("SELECT error FROM silver.silver_dead_letters") == [(DEAD_LETTERS[0].error,)]
    cols = ", ".join(HOST_ACTIVITY_COLUMNS)
    got = lake.query(f"SELECT {cols} FROM gold.host_activity_5m ORDER BY host_id, window_start")
    assert got == EXPECTED_HOST_ACTIVITY
    cols = ", ".join(DNS_DOMAIN_COLUMNS)
    got = lake.query(f"SELECT {cols} FROM gold.dns_domain_stats ORDER BY registered_domain")
    assert got == EXPECTED_DNS_DOMAINS
    cols = ", ".join(ALERT_ROLLUP_COLUMNS)
    got = lake.query(f"SELECT {cols} FROM gold.alert_rollup_daily ORDER BY day, rule_id, severity")
    assert got == EXPECTED_ALERT_ROLLUP


def test_replayed_events_stay_unique_in_silver(lake: Lake) -> None:
    _produce_fixture(lake)
    lake.run(**TIMELESS)
    lake.produce(list(EVENTS))  # the same events again: new offsets, same ids

    result = lake.run(**TIMELESS)

    assert result.success
    assert len(lake.bronze("events")) == 2 * len(EVENTS)
    assert lake.query("SELECT count(*), count(DISTINCT event_id) FROM silver.silver_events") == [
        (DISTINCT_EVENT_IDS, DISTINCT_EVENT_IDS)
    ]
    cols = ", ".join(HOST_ACTIVITY_COLUMNS)
    got = lake.query(f"SELECT {cols} FROM gold.host_activity_5m ORDER BY host_id, window_start")
    assert got == EXPECTED_HOST_ACTIVITY


def test_a_failed_gate_blocks_gold_and_says_which_expectation_and_rows(lake: Lake) -> None:
    # Half an hour ahead: past the gate's 5 minutes of skew, inside what the broker accepts (1 h).
    ahead = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = [dict(e, id=f"future-{n}", ts=ahead) for n, e in enumerate(EVENTS[:6])]
    lake.produce([*EVENTS, *future])

    result = lake.run(raise_on_error=False, **TIMELESS)

    checks = _checks(result)
    gate = checks["silver_events_quality_check"]
    assert not gate.passed
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert "expect_column_values_to_be_between" in meta["failed_expectations"]
    assert "ts" in meta["reason"] and "6 of 30 rows unexpected" in meta["reason"]
    assert meta["sample_bad_rows"].count("| future-") == 5  # five sample rows, whole
    assert not set(GOLD) & _materialized(result)
    assert "silver_events" in _materialized(result)
    report = lake.settings.lake_root / "reports" / "quality-silver.html"
    assert "FAILED" in report.read_text() and "future-" in report.read_text()
