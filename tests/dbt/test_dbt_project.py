"""The dbt project builds silver and gold from a fixed bronze lake into the hand-computed rows.

One `dbt build` (models, data tests, unit tests) runs for the module; the tests read its tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestration.lib.bronze import LakePaths, register_bronze_views
from sentinel.settings import PROJECT_ROOT
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
    TOPICS,
    write_bronze,
)

DBT_DIR = PROJECT_ROOT / "dbt"
PER_KIND = ("proc", "file", "net", "dns", "auth")


@dataclass(frozen=True)
class Build:
    paths: LakePaths
    result: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    root = tmp_path_factory.mktemp("lake")
    paths = write_bronze(root, TOPICS, EVENTS, ALERTS, DEAD_LETTERS)
    with duckdb.connect(str(paths.duckdb)) as con:
        register_bronze_views(con, paths, TOPICS)
    dbt = Path(sys.executable).with_name("dbt")
    # target and logs inside tmp: parallel runs never share dbt/target
    command = [
        str(dbt),
        "build",
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(root / "target"),
        "--log-path",
        str(root / "logs"),
    ]
    env = {**os.environ, "SENTINEL_LAKE_DUCKDB": str(paths.duckdb), "DO_NOT_TRACK": "1"}
    began = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return Build(paths, result, time.perf_counter() - began)


@pytest.fixture
def lake(build: Build) -> Iterator[duckdb.DuckDBPyConnection]:
    assert build.result.returncode == 0, build.result.stdout + build.result.stderr
    with duckdb.connect(str(build.paths.duckdb), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        yield con


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def test_dbt_build_passes_every_model_data_test_and_unit_test_without_warnings(
    build: Build,
) -> None:
    out = build.result.stdout + build.result.stderr
    assert build.result.returncode == 0, out
    assert "ERROR=0" in out and "WARN=0" in out, out
    assert "[WARNING]" not in out, out
    print(f"dbt build took {build.seconds:.1f} s")


def test_silver_events_has_one_row_per_event_id(lake: duckdb.DuckDBPyConnection) -> None:
    [(count, distinct)] = rows(
        lake, "select count(*), count(distinct event_id) from silver.silver_events"
    )
    assert len(EVENTS) == DISTINCT_EVENT_IDS + 1  # the fixture holds one retried event
    assert (count, distinct) == (DISTINCT_EVENT_IDS, DISTINCT_EVENT_IDS)


def test_a_retried_event_keeps_the_copy_kafka_saw_first(lake: duckdb.DuckDBPyConnection) -> None:
    # evt-11 landed at offsets 10 and 11 of partition 0
    assert rows(
        lake,
        "select kafka_partition, kafka_offset from silver.silver_events where event_id = 'evt-11'",
    ) == [(0, 10)]


def test_every_event_is_in_exactly_one_per_kind_table(lake: duckdb.DuckDBPyConnection) -> None:
    union = " union all ".join(f"select event_id from silver.silver_{k}_events" for k in PER_KIND)
    [(count, distinct)] = rows(lake, f"select count(*), count(distinct event_id) from ({union})")
    assert (count, distinct) == (DISTINCT_EVENT_IDS, DISTINCT_EVENT_IDS)


def test_host_activity_5m_rows_are_the_hand_computed_ones(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    columns = ", ".join(HOST_ACTIVITY_COLUMNS)
    got = rows(lake, f"select {columns} from gold.host_activity_5m order by host_id, window_start")
    assert got == EXPECTED_HOST_ACTIVITY


def test_dns_domain_stats_rows_are_the_hand_computed_ones(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    columns = ", ".join(DNS_DOMAIN_COLUMNS)
    got = rows(lake, f"select {columns} from gold.dns_domain_stats order by registered_domain")
    assert got == EXPECTED_DNS_DOMAINS


def test_alert_rollup_daily_counts_a_replayed_alert_once(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    assert rows(lake, "select count(*) from silver.silver_alerts") == [(DISTINCT_ALERT_IDS,)]
    columns = ", ".join(ALERT_ROLLUP_COLUMNS)
    got = rows(lake, f"select {columns} from gold.alert_rollup_daily order by day, rule_id")
    assert got == EXPECTED_ALERT_ROLLUP


def test_a_dead_letter_keeps_its_reason_and_source_coordinates(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    got = rows(
        lake,
        "select error, stage, source_topic, source_partition, source_offset, record_key,"
        " payload_size from silver.silver_dead_letters",
    )
    assert got == [
        (
            "not JSON: key must be a string at line 1 column 2",
            "validate",
            "sentinel.events.v1",
            0,
            42,
            "h-002",
            9,  # len(b"{not json")
        )
    ]
