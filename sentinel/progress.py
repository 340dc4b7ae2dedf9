"""Progress output for long work: a live bar on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_reporter(
    label: str, total: int, *, enabled: bool = True, every_s: float = 5.0
) -> Iterator[Callable[[int], None]]:
    """Yield `update(done)`; draws on stderr (a bar on a TTY, periodic lines in CI logs)."""
    if not enabled:
        yield lambda done: None
        return
    if sys.stderr.isatty():
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(label, total=total, rate="")
            started = time.perf_counter()

            def update(done: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:,.0f}/s")

            yield update
        return
    started = last = time.perf_counter()

    def log(done: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= every_s or done >= total:
            last = now
            rate = done / max(now - started, 1e-9)
            print(f"{label}: {done:,}/{total:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    yield log
