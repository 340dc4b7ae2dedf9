"""Great Expectations quality gates over lake tables: suites are code, results are for people.

A gate reads one DuckDB table into pandas, validates it against its suite and returns which
expectations failed with a few of the offending rows. Great Expectations takes seconds to
import, so it is imported only when a gate runs.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class GateContext:
    """What suites may depend on besides the table: the clock, thresholds, the last good run."""

    now: datetime
    freshness_hours: float
    future_skew_s: float
    max_row_drop: float
    previous_rows: int | None


SuiteBuilder = Callable[[pd.DataFrame, GateContext], list[Any]]


@dataclass(frozen=True)
class Gate:
    """A suite for one table: `key` names the column that identifies a bad row."""

    table: str  # the relation in DuckDB, schema.table
    asset: str  # its Dagster asset key
    key: list[str]
    build: SuiteBuilder
    description: str


@dataclass
class Failure:
    expectation: str
    column: str | None
    summary: str
    sample: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GateResult:
    gate: Gate
    rows: int
    evaluated: int
    failures: list[Failure]

    @property
    def passed(self) -> bool:
        return not self.failures

    def reason(self) -> str:
        if self.passed:
            return f"{self.gate.asset}: all {self.evaluated} expectations hold on {self.rows} rows"
        parts = [f"{f.expectation}({f.column or 'table'}): {f.summary}" for f in self.failures]
        return (
            f"{self.gate.asset}: {len(self.failures)} of {self.evaluated} expectations failed: "
            + "; ".join(parts)
        )

    def sample_markdown(self, limit: int = 5) -> str:
        lines = []
        for f in self.failures:
            lines.append(f"**{f.expectation}** on `{f.column or 'table'}`: {f.summary}")
            if f.sample:
                cols = list(f.sample[0])
                lines.append("")
                lines.append("| " + " | ".join(cols) + " |")
                lines.append("|" + "---|" * len(cols))
                for row in f.sample[:limit]:
                    lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
            lines.append("")
        return "\n".join(lines) or "no failures"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def _describe(kind: str, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
    if "unexpected_count" in result:
        shown = ", ".join(map(repr, result.get("partial_unexpected_list", [])[:3]))
        return (
            f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected "
            f"({result.get('unexpected_percent', 0):.2f}%), e.g. {shown}"
        )
    expected = {k: v for k, v in kwargs.items() if k not in ("column", "result_format")}
    return (
        f"observed {result.get('observed_value')!r}, expected {json.dumps(expected, default=str)}"
    )


def run_gate(gate: Gate, frame: pd.DataFrame, context: GateContext) -> GateResult:
    """Validate `frame` (the whole table) against the gate's suite."""
    import great_expectations as gx

    gx_context = gx.get_context(mode="ephemeral")
    _quiet(gx_context)
    source = gx_context.data_sources.add_pandas("lake")
    batch_def = source.add_dataframe_asset(gate.asset).add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=f"{gate.asset}_suite")
    for expectation in gate.build(frame, context):
        suite.add_expectation(expectation)
    suite = gx_context.suites.add(suite)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(
        suite,
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": gate.key,
            "partial_unexpected_count": 5,
        },
    )
    failures = []
    for res in validation.results:
        if res.success:
            continue
        data: dict[str, Any] = res.to_json_dict()
        config = data["expectation_config"]
        kwargs = config.get("kwargs", {})
        result = data.get("result") or {}
        exc = data.get("exception_info") or {}
        if exc.get("raised_exception"):
            summary = f"could not evaluate: {exc.get('exception_message')}"
        else:
            summary = _describe(config["type"], result, kwargs)
        failures.append(
            Failure(
                config["type"],
                kwargs.get("column"),
                summary,
                _sample_rows(frame, gate.key, result.get("partial_unexpected_index_list") or []),
            )
        )
    return GateResult(gate, len(frame), len(validation.results), failures)


def _quiet(gx_context: Any) -> None:
    """No progress bars from GE inside Dagster logs."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        gx_context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):  # older or newer layout: bars are cosmetic
        pass


def _sample_rows(
    frame: pd.DataFrame, key: list[str], index: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The whole offending rows, found by their key values from GE's unexpected index list."""
    if not index or not key:
        return []
    wanted = {tuple(item.get(k) for k in key) for item in index}
    mask = (
        frame[key].apply(tuple, axis=1).isin(wanted)
        if len(key) > 1
        else frame[key[0]].isin([w[0] for w in wanted])
    )
    rows = frame[mask].head(5)
    return [{k: _plain(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def now_utc() -> datetime:
    return datetime.now(UTC)


def newest_minus(hours: float, newest: Any) -> datetime | None:
    if newest is None or pd.isna(newest):
        return None
    newest_at: datetime = pd.Timestamp(newest).to_pydatetime()
    return newest_at - timedelta(hours=hours)


# --- state of the last good run per table, for row-count change ----------------------------


def previous_rows(state_dir: Path, asset: str) -> int | None:
    path = state_dir / f"{asset}.json"
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["rows"])


def remember_rows(state_dir: Path, asset: str, rows: int, at: datetime) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{asset}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows, "at": at.isoformat()}))
    tmp.replace(path)


# --- the HTML report ----------------------------------------------------------------------


def render_report(results: list[GateResult], title: str, at: datetime) -> str:
    """One self-contained HTML page: a row per gate, failed expectations with sample rows."""
    rows = []
    for r in results:
        status = "passed" if r.passed else "FAILED"
        color = "#1a7f37" if r.passed else "#cf222e"
        details = ""
        for f in r.failures:
            sample = ""
            if f.sample:
                cols = list(f.sample[0])
                head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(_cell(s[c]))}</td>" for c in cols) + "</tr>"
                    for s in f.sample
                )
                sample = f"<table class=sample><tr>{head}</tr>{body}</table>"
            details += (
                f"<li><b>{html.escape(f.expectation)}</b> on <code>{html.escape(f.column or 'table')}</code>: "
                f"{html.escape(f.summary)}{sample}</li>"
            )
        rows.append(
            f"<tr><td><code>{html.escape(r.gate.asset)}</code></td>"
            f"<td style='color:{color}'><b>{status}</b></td><td>{r.rows:,}</td>"
            f"<td>{r.evaluated - len(r.failures)}/{r.evaluated}</td>"
            f"<td><ul>{details}</ul></td></tr>"
        )
    return f"""<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;text-align:left}}
table.sample{{margin:.5em 0;font-size:90%}}</style></head><body>
<h1>{html.escape(title)}</h1><p>evaluated {at.isoformat()}</p>
<table><tr><th>asset</th><th>gate</th><th>rows</th><th>expectations met</th><th>failures</th></tr>
{"".join(rows)}</table></body></html>"""
