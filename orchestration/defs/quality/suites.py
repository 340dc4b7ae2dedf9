"""The expectation suites of the lake's gates, as code: one builder per gated table.

Each builder gets the table (pandas) and the gate context, and returns Great Expectations
expectations: completeness, value sets, ranges, freshness, row-count change and schema.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from orchestration.lib.gates import Gate, GateContext, newest_minus

KINDS = ["proc", "file", "net", "dns", "auth"]
SEVERITIES = ["low", "medium", "high", "critical"]
QTYPES = [
    "A",
    "AAAA",
    "CNAME",
    "MX",
    "NS",
    "PTR",
    "SOA",
    "SRV",
    "TXT",
    "ANY",
    "HTTPS",
    "SVCB",
    "NULL",
]
RCODES = ["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"]
MAX_ENTROPY = 8.0  # bits per character: no byte string can exceed it


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


def _row_count(ctx: GateContext) -> list[Any]:
    """Row-count change: a table may grow freely but not lose more than max_row_drop of its rows."""
    gxe = _gxe()
    if ctx.previous_rows is None:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=0)]
    floor = int(ctx.previous_rows * (1 - ctx.max_row_drop))
    return [gxe.ExpectTableRowCountToBeBetween(min_value=floor)]


def _not_in_future(ctx: GateContext, column: str) -> Any:
    """Timestamps at most `future_skew_s` ahead of the gate's clock."""
    limit = ctx.now + timedelta(seconds=ctx.future_skew_s)
    return _gxe().ExpectColumnValuesToBeBetween(column=column, max_value=limit)


def _timeline(frame: pd.DataFrame, ctx: GateContext, column: str) -> list[Any]:
    """No timestamps from the future; the newest close enough to the newest landing (freshness)."""
    gxe = _gxe()
    checks = [
        gxe.ExpectColumnValuesToNotBeNull(column=column),
        _not_in_future(ctx, column),
    ]
    if "landed_at" in frame.columns and len(frame):
        floor = newest_minus(ctx.freshness_hours, frame["landed_at"].max())
        if floor is not None:
            checks.append(gxe.ExpectColumnMaxToBeBetween(column=column, min_value=floor))
    return checks


def _schema(columns: list[str]) -> list[Any]:
    return [_gxe().ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False)]


def silver_events(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    return [
        *_schema(["event_id", "ts", "host_id", "kind", "sensor_name", "landed_at"]),
        gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="host_id"),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=KINDS),
        *_timeline(frame, ctx, "ts"),
        *_row_count(ctx),
    ]


def silver_dns_events(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    return [
        *_schema(["event_id", "ts", "host_id", "query", "qtype", "query_entropy"]),
        gxe.ExpectColumnValuesToNotBeNull(column="query"),
        gxe.ExpectColumnValuesToBeInSet(column="qtype", value_set=QTYPES),
        gxe.ExpectColumnValuesToBeInSet(column="rcode", value_set=RCODES, mostly=1.0),
        gxe.ExpectColumnValuesToBeBetween(
            column="query_entropy", min_value=0, max_value=MAX_ENTROPY
        ),
        *_row_count(ctx),
    ]


def silver_alerts(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    return [
        *_schema(["alert_id", "ts", "rule_id", "severity", "host_id"]),
        gxe.ExpectColumnValuesToBeUnique(column="alert_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="rule_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="host_id"),
        gxe.ExpectColumnValuesToBeInSet(column="severity", value_set=SEVERITIES),
        gxe.ExpectColumnValuesToBeBetween(column="event_count", min_value=1),
        _not_in_future(ctx, "ts"),
        *_row_count(ctx),
    ]


def host_activity_5m(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    counts = [
        "events",
        "process_spawns",
        "distinct_parents",
        "file_writes",
        "bytes_out",
        "dns_queries",
        "auth_failures",
    ]
    return [
        *_schema(["host_id", "window_start", *counts, "dns_entropy_avg", "dns_entropy_max"]),
        gxe.ExpectColumnValuesToNotBeNull(column="host_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="window_start"),
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counts],
        gxe.ExpectColumnValuesToBeBetween(column="events", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(
            column="dns_entropy_max", min_value=0, max_value=MAX_ENTROPY
        ),
        _not_in_future(ctx, "window_start"),
        *_row_count(ctx),
    ]


FEATURE_COUNTS = [
    "events",
    "process_spawns",
    "distinct_parents",
    "file_writes",
    "bytes_out",
    "auth_failures",
    "dns_queries",
    "dns_distinct_domains",
    "dns_nxdomain",
    "dns_txt_queries",
    "alerts",
    "high_alerts",
]


def host_features_5m(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    """What Feast serves to training and scoring: complete, non-negative, one row per window."""
    gxe = _gxe()
    floats = ["dns_entropy_avg", "dns_entropy_max"]
    return [
        *_schema(["host_id", "window_start", "event_timestamp", *FEATURE_COUNTS, *floats]),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ["host_id", "event_timestamp", *FEATURE_COUNTS, *floats]
        ],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in FEATURE_COUNTS],
        *[
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=MAX_ENTROPY)
            for c in floats
        ],
        gxe.ExpectColumnValuesToBeBetween(column="events", min_value=1),
        _not_in_future(ctx, "window_start"),
        *_row_count(ctx),
    ]


def dns_domain_stats(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    return [
        *_schema(["registered_domain", "queries", "distinct_hosts", "nxdomain_ratio"]),
        gxe.ExpectColumnValuesToBeUnique(column="registered_domain"),
        gxe.ExpectColumnValuesToBeBetween(column="queries", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="nxdomain_ratio", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="entropy_max", min_value=0, max_value=MAX_ENTROPY),
        *_row_count(ctx),
    ]


def alert_rollup_daily(frame: pd.DataFrame, ctx: GateContext) -> list[Any]:
    gxe = _gxe()
    return [
        *_schema(["day", "rule_id", "severity", "alerts", "distinct_hosts", "events"]),
        gxe.ExpectColumnValuesToBeInSet(column="severity", value_set=SEVERITIES),
        gxe.ExpectColumnValuesToBeBetween(column="alerts", min_value=1),
        *_row_count(ctx),
    ]


SILVER_GATES = [
    Gate(
        "silver.silver_events",
        "silver_events",
        ["event_id"],
        silver_events,
        "every event typed, unique, placed in time",
    ),
    Gate(
        "silver.silver_dns_events",
        "silver_dns_events",
        ["event_id"],
        silver_dns_events,
        "DNS queries well-formed",
    ),
    Gate(
        "silver.silver_alerts",
        "silver_alerts",
        ["alert_id"],
        silver_alerts,
        "alerts unique with known severities",
    ),
]
GOLD_GATES = [
    Gate(
        "gold.host_activity_5m",
        "host_activity_5m",
        ["host_id", "window_start"],
        host_activity_5m,
        "per-host windows consistent",
    ),
    Gate(
        "gold.host_features_5m",
        "host_features_5m",
        ["host_id", "window_start"],
        host_features_5m,
        "feature rows complete and non-negative",
    ),
    Gate(
        "gold.dns_domain_stats",
        "dns_domain_stats",
        ["registered_domain"],
        dns_domain_stats,
        "domain statistics in range",
    ),
    Gate(
        "gold.alert_rollup_daily",
        "alert_rollup_daily",
        ["day", "rule_id", "severity"],
        alert_rollup_daily,
        "daily roll-up consistent",
    ),
]
