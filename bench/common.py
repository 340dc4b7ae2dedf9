"""Shared benchmark plumbing: a result row, machine facts, and the PERFORMANCE.md writer."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sentinel.settings import PROJECT_ROOT, Settings

PERFORMANCE_MD = PROJECT_ROOT / "docs" / "PERFORMANCE.md"


@dataclass(frozen=True)
class Result:
    bench: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def _number(self) -> str:
        # Ratios and small latencies need a decimal; rates do not.
        return f"{self.value:,.1f}" if abs(self.value) < 100 else f"{self.value:,.0f}"

    def row(self) -> str:
        verdict = "" if self.met is None else ("yes" if self.met else "**no**")
        return (
            f"| {self.bench} | {self.metric} | {self._number()} {self.unit} | {self.target} "
            f"| {verdict} | {self.note} |"
        )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"commit {commit or '?'}"
    )


def write_section(name: str, command: str, results: list[Result], notes: str = "") -> None:
    """Replace (or append) the generated section `name` of docs/PERFORMANCE.md."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            begin,
            f"Command: `{command}` — run {stamp} on {machine()}.",
            "",
            "| benchmark | metric | result | target | met | note |",
            "| --- | --- | --- | --- | --- | --- |",
            *(r.row() for r in results),
            *(["", notes] if notes else []),
            end,
        ]
    )
    text = PERFORMANCE_MD.read_text() if PERFORMANCE_MD.exists() else "# Performance\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: body, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + body + "\n"
    )
    PERFORMANCE_MD.write_text(text)


@contextmanager
def embedded_broker(settings: Settings) -> Iterator[None]:
    """The broker the settings name: started when needed, stopped afterwards if started here."""
    from sentinel.kafka import EmbeddedBroker

    broker = EmbeddedBroker(settings)
    started_here = settings.kafka_embedded and broker.pid() is None
    broker.start()
    try:
        yield
    finally:
        if started_here:
            broker.stop()
