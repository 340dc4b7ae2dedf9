"""Run a lake job outside the UI (the demo, `sentinel lake run`) and summarise the lake.

Runs go to the Dagster instance under the state folder, the same one `sentinel dev` starts the
UI on, so a run started here shows up there with its logs, metadata and check results.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.lib.bronze import LakePaths
from sentinel.settings import Settings
from sentinel.tracing import flush, tracer

SILVER = (
    "silver_events",
    "silver_proc_events",
    "silver_file_events",
    "silver_net_events",
    "silver_dns_events",
    "silver_auth_events",
    "silver_alerts",
    "silver_dead_letters",
)
GOLD = (
    "host_activity_5m",
    "host_features_5m",
    "host_labels_5m",
    "dns_domain_stats",
    "alert_rollup_daily",
)


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance of the embedded stack (DAGSTER_HOME of `sentinel dev`)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    description: str


@dataclass
class JobOutcome:
    job: str
    run_id: str
    success: bool
    materialized: list[str]
    checks: list[CheckOutcome]
    failed_steps: list[str]

    @property
    def gates(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.name.endswith("_quality_check")]


def run_job(
    settings: Settings,
    job: str = "lake_hourly",
    instance: dg.DagsterInstance | None = None,
    log_file: Path | None = None,
) -> JobOutcome:
    """Execute `job` in this process against the real lake; failures are reported, not raised.

    With `log_file`, everything the run prints or logs (Dagster events, dbt's output, library
    chatter) goes there instead of the terminal; the run's events are in the instance anyway.
    The run is one `dagster.run` span (service sentinel-dagster).
    """
    from orchestration.definitions import build

    with (
        tracer(settings, "sentinel-dagster").start_as_current_span(
            "dagster.run", attributes={"dagster.job": job}
        ) as span,
        _captured(log_file),
    ):
        definitions = build(settings)
        own = instance is None
        instance = instance or instance_for(settings)
        try:
            result = definitions.resolve_job_def(job).execute_in_process(
                instance=instance, raise_on_error=False
            )
        finally:
            if own:
                instance.dispose()
        outcome = outcome_of(job, result)
        span.set_attribute("dagster.run_id", outcome.run_id)
        span.set_attribute("dagster.success", outcome.success)
        span.set_attribute("dagster.materialized", len(outcome.materialized))
        span.set_attribute("dagster.failed_steps", outcome.failed_steps)
        span.set_attribute("dagster.checks_failed", sum(1 for c in outcome.checks if not c.passed))
    flush()
    return outcome


@contextmanager
def _captured(log_file: Path | None) -> Iterator[None]:
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = root.handlers[:]
    with log_file.open("a") as out, redirect_stdout(out), redirect_stderr(out):
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers = [handler]
        try:
            yield
        finally:
            root.handlers = saved


def outcome_of(job: str, result: dg.ExecuteInProcessResult) -> JobOutcome:
    materialized, checks, failed = [], [], []
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION" and event.asset_key:
            materialized.append(event.asset_key.to_user_string())
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data: Any = event.event_specific_data
            checks.append(
                CheckOutcome(
                    data.asset_key.to_user_string(),
                    data.check_name,
                    data.passed,
                    data.description or "",
                )
            )
        elif event.is_step_failure and event.step_key:
            failed.append(event.step_key)
    return JobOutcome(job, result.run_id, result.success, materialized, checks, failed)


def layer_counts(settings: Settings, topics: dict[str, str]) -> list[tuple[str, str, int | None]]:
    """(layer, table, rows) for every bronze, silver and gold table; None where not built yet."""
    import duckdb

    paths = LakePaths(settings.lake_root)
    rows: list[tuple[str, str, int | None]] = []
    memory = duckdb.connect()
    for table, topic in topics.items():
        n = None
        if paths.has_bronze(topic):
            glob = paths.bronze_glob(topic)
            n = memory.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
        rows.append(("bronze", f"bronze_{table}", int(n[0]) if n else 0))
    memory.close()
    if not Path(paths.duckdb).exists():
        return rows + [("silver", t, None) for t in SILVER] + [("gold", t, None) for t in GOLD]
    con = duckdb.connect(str(paths.duckdb), read_only=True)
    try:
        existing = {
            (schema, name)
            for schema, name in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
        for layer, tables in (("silver", SILVER), ("gold", GOLD)):
            for table in tables:
                if (layer, table) in existing:
                    found = con.execute(f"SELECT count(*) FROM {layer}.{table}").fetchone()
                    rows.append((layer, table, int(found[0]) if found else 0))
                else:
                    rows.append((layer, table, None))
    finally:
        con.close()
    return rows


def model_versions(settings: Settings) -> list[tuple[str, str, str, str, str, str]]:
    """(version, aliases, feature service, PR-AUC, threshold, promotion) per registered version,
    newest first; empty when nothing was trained yet."""
    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    from sentinel.ml.registry import configure

    client = configure(uri)
    versions = client.search_model_versions(f"name = '{settings.models_name}'")
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, version in client.get_registered_model(settings.models_name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: -int(v.version)):
        tags = v.tags or {}
        pr_auc = tags.get("pr_auc")
        threshold = tags.get("threshold")
        rows.append(
            (
                str(v.version),
                ", ".join(sorted(aliases.get(str(v.version), []))) or "-",
                tags.get("feature_service", "-"),
                f"{float(pr_auc):.3f}" if pr_auc else "-",
                f"{float(threshold):.3f}" if threshold else "-",
                tags.get("promotion", "-"),
            )
        )
    return rows
