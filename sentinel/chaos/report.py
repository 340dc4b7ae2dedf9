"""The drill's outputs: tables on the console, report.json, report.md (the block that
docs/RELIABILITY.md keeps) and report.html with the lag and spool curves over the faults."""

from __future__ import annotations

import base64
import html
import io
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from sentinel.chaos.drill import DrillReport
from sentinel.settings import PROJECT_ROOT

BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def commit() -> str:
    """The short commit the drill ran, with `+changes` when tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        changed = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return f"{head}+changes" if changed else head


def print_report(report: DrillReport, console: Console) -> None:
    faults = Table("fault", "at", "down / slowed", "recovered after", "detail", title="faults")
    for f in report.faults:
        faults.add_row(f.fault, _s(f.at_s), _s(f.down_s), _s(f.recovered_s), f.detail)
    console.print(faults)
    checks = Table(
        "check", "expected", "observed", "lost", "duplicated", "", "detail", title="reconciliation"
    )
    for c in report.checks:
        checks.add_row(
            c.name,
            f"{c.expected:,}",
            f"{c.observed:,}",
            f"{c.lost:,}",
            f"{c.duplicated:,}",
            "[green]ok[/]" if c.ok else "[red]FAILED[/]",
            c.detail,
        )
    console.print(checks)
    verdict = "[green]nothing lost, nothing duplicated[/]" if report.ok else "[red]FAILED[/]"
    console.print(
        f"{verdict}: {report.lost:,} lost, {report.duplicated:,} duplicated; "
        f"drill took {report.elapsed_s:.0f} s; logs and reports in {report.root}"
    )


def markdown(report: DrillReport) -> str:
    p = report.plan
    lines = [
        f"Command: `make chaos` (`sentinel chaos run --seconds {p.seconds:.0f} --rate "
        f"{p.rate:.0f} --agents {p.agents}`) — run {report.started} on this machine, commit "
        f"{report.commit}; the whole drill took {report.elapsed_s:.0f} s.",
        "",
        "| fault | at | down / slowed | recovered after | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in report.faults:
        lines.append(
            f"| {f.fault} | {_s(f.at_s)} | {_s(f.down_s)} | {_s(f.recovered_s)} | {f.detail} |"
        )
    lines += [
        "",
        "| check | expected | observed | lost | duplicated | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in report.checks:
        lines.append(
            f"| {c.name} | {c.expected:,} | {c.observed:,} | {c.lost:,} | {c.duplicated:,} | "
            f"{'ok' if c.ok else 'FAILED'}: {c.detail} |"
        )
    lines += [
        "",
        f"**{'Nothing lost, nothing duplicated' if report.ok else 'FAILED'}**: "
        f"{report.lost:,} lost, {report.duplicated:,} duplicated.",
    ]
    return "\n".join(lines)


def as_dict(report: DrillReport) -> dict[str, Any]:
    return {
        "plan": report.plan.__dict__,
        "started": report.started,
        "commit": report.commit,
        "elapsed_s": report.elapsed_s,
        "ok": report.ok,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "faults": [f.__dict__ for f in report.faults],
        "checks": [{**c.__dict__, "ok": c.ok} for c in report.checks],
        "samples": report.samples,
    }


def chart(report: DrillReport) -> str:
    """Detection lag, triage lag and spool depth over time, the faults shaded; a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report.samples
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    t = [s["t"] for s in samples]
    series = [
        ("detection lag (events)", ["detection_lag"]),
        ("triage lag (alerts)", ["triage_lag"]),
        (
            "agent spool (events waiting)",
            [k for k in (samples[0] if samples else {}) if k.startswith("spool:")],
        ),
    ]
    for ax, (title, keys) in zip(axes, series, strict=True):
        for key in keys:
            ax.plot(t, [s.get(key) for s in samples], label=key.removeprefix("spool:"))
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        for f in report.faults:
            ax.axvspan(f.at_s, f.at_s + (f.down_s or 1), color="tab:red", alpha=0.12)
    for f in report.faults:
        axes[0].annotate(
            f.fault,
            (f.at_s, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=20,
            va="bottom",
        )
    axes[-1].set_xlabel("seconds since production started")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_html(report: DrillReport) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in rows
        )
        return f"<table><tr>{h}</tr>{body}</table>"

    faults = table(
        ["fault", "at", "down / slowed", "recovered after", "detail"],
        [[f.fault, _s(f.at_s), _s(f.down_s), _s(f.recovered_s), f.detail] for f in report.faults],
    )
    checks = table(
        ["check", "expected", "observed", "lost", "duplicated", "result", "detail"],
        [
            [
                c.name,
                f"{c.expected:,}",
                f"{c.observed:,}",
                f"{c.lost:,}",
                f"{c.duplicated:,}",
                "ok" if c.ok else "FAILED",
                c.detail,
            ]
            for c in report.checks
        ],
    )
    verdict = "nothing lost, nothing duplicated" if report.ok else "FAILED"
    color = "#1a7f37" if report.ok else "#cf222e"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sentinel chaos drill</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:left}}th{{background:#f4f4f4}}</style></head><body>
<h1>Chaos drill <span style="color:{color}">{verdict}</span></h1>
<p>{html.escape(report.started)}, commit {html.escape(report.commit)}: {report.plan.agents} agents
x {report.plan.rate:.0f} events/s for {report.plan.seconds:.0f} s; the drill took
{report.elapsed_s:.0f} s. {report.lost:,} lost, {report.duplicated:,} duplicated.</p>
<h2>Faults</h2>{faults}<h2>Reconciliation</h2>{checks}
<h2>Lag and spools</h2><img alt="lag and spool depth over time" src="{chart(report)}">
</body></html>"""


def write_reports(report: DrillReport) -> dict[str, Path]:
    root = report.root
    paths = {"json": root / "report.json", "md": root / "report.md", "html": root / "report.html"}
    paths["json"].write_bytes(orjson.dumps(as_dict(report), option=orjson.OPT_INDENT_2))
    paths["md"].write_text(markdown(report) + "\n")
    paths["html"].write_text(render_html(report))
    return paths


def record_in(doc: Path, report: DrillReport) -> None:
    """Replace the block between the chaos markers of `doc` with this run's tables."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no {BEGIN} ... {END} block")
    block = f"{BEGIN}\n{markdown(report)}\n{END}"
    doc.write_text(
        re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    )
