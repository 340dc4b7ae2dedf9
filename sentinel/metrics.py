"""Prometheus helpers shared by the long-running processes, and the gauges read from the state
folder at scrape time: lake freshness (bronze landings) and the newest evaluation report.

The lake and the evaluations are written by Dagster runs, which do not live long enough to be
scraped; what they leave behind (the landing ledger, `report.json`) is read when Prometheus asks,
by the detection worker (see docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sentinel.kafka import ALERTS, EVENTS, EVENTS_DLQ
from sentinel.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp (Faust) refuses a charset here
LAKE_TOPICS = (EVENTS, ALERTS, EVENTS_DLQ)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class Snapshot(Collector):
    """Counters and gauges read from a process's own state at scrape time: nothing on the hot path.

    `read()` returns the metric families; the process keeps counting in plain integers.
    """

    def __init__(self, read: Callable[[], Iterable[Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        yield from self.read()


class StateCollector(Collector):
    """Lake freshness and the evaluation gate, from the files the Dagster runs leave."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        landed = GaugeMetricFamily(
            "sentinel_lake_last_landing_timestamp_seconds",
            "when a landing run last committed records of the topic into bronze (ledger mtime)",
            labels=["topic"],
        )
        newest = GaugeMetricFamily(
            "sentinel_lake_newest_data_timestamp_seconds",
            "end of the newest event-time hour folder in bronze of the topic",
            labels=["topic"],
        )
        bronze = self.settings.lake_root / "bronze"
        for topic in LAKE_TOPICS:
            folder = bronze / topic
            ledger = _newest_mtime(folder / "_ledger")
            if ledger is not None:
                landed.add_metric([topic], ledger)
            hour = _newest_hour(folder)
            if hour is not None:
                newest.add_metric([topic], hour)
        yield landed
        yield newest
        yield from self._evals()

    def _evals(self) -> Iterator[Any]:
        passed = GaugeMetricFamily(
            "sentinel_eval_gate_passed", "1 when the newest evaluation report's gate passed"
        )
        ratio = GaugeMetricFamily(
            "sentinel_eval_variants_passed_ratio",
            "share of the newest evaluation's variants that passed their thresholds",
        )
        when = GaugeMetricFamily(
            "sentinel_eval_last_run_timestamp_seconds",
            "when the newest evaluation report was written",
        )
        report = _newest_report(self.settings.evals_root)
        if report is not None:
            path, body = report
            gate = body.get("gate") if isinstance(body, dict) else None
            if isinstance(gate, dict):
                variants = gate.get("variants") or {}
                passed.add_metric([], 1.0 if gate.get("passed") else 0.0)
                if variants:
                    ok = sum(
                        1 for v in variants.values() if isinstance(v, dict) and v.get("passed")
                    )
                    ratio.add_metric([], ok / len(variants))
                when.add_metric([], path.stat().st_mtime)
        yield passed
        yield ratio
        yield when


def _newest_mtime(path: Path) -> float | None:
    try:
        newest = path.stat().st_mtime
        if path.is_dir():
            for child in path.iterdir():
                newest = max(newest, child.stat().st_mtime)
    except OSError:
        return None
    return newest


def _newest_hour(folder: Path) -> float | None:
    """End of the newest `date=YYYY-MM-DD/hour=HH` folder (event time), in epoch seconds."""
    from datetime import UTC, datetime

    try:
        dates = sorted(p.name for p in folder.glob("date=*") if p.is_dir())
        for date in reversed(dates):
            hours = sorted(p.name for p in (folder / date).glob("hour=*") if p.is_dir())
            if hours:
                start = datetime.strptime(f"{date[5:]} {hours[-1][5:]}", "%Y-%m-%d %H").replace(
                    tzinfo=UTC
                )
                return start.timestamp() + 3600
    except (OSError, ValueError):
        return None
    return None


def _newest_report(root: Path) -> tuple[Path, Any] | None:
    try:
        reports = sorted(root.glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    for path in reversed(reports):
        try:
            return path, orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
    return None
