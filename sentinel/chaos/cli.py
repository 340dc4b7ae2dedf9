"""`sentinel chaos run`: the chaos drill of docs/RELIABILITY.md (what `make chaos` runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sentinel.console import err, out
from sentinel.console import fail as _fail
from sentinel.console import settings_or_exit as _settings

app = typer.Typer(
    help="Chaos drills on loopback: faults under load, then a reconciliation.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    seconds: Annotated[float, typer.Option(help="how long the agents produce")] = 180.0,
    rate: Annotated[float, typer.Option(help="events per second, per agent")] = 250.0,
    agents: Annotated[int, typer.Option(help="agents; the first one's path gets cut")] = 2,
    malformed: Annotated[int, typer.Option(help="malformed records per injection (two)")] = 100,
    cut: Annotated[float, typer.Option(help="seconds the agent's path stays down")] = 30.0,
    slow: Annotated[float, typer.Option(help="seconds the upstream model server is slow")] = 30.0,
    latency: Annotated[float, typer.Option(help="seconds added to each upstream response")] = 2.0,
    seed: Annotated[int, typer.Option(help="seed of the agents' scenarios")] = 7,
    cut_mode: Annotated[
        str,
        typer.Option(
            help="reset: the path refuses connections; blackhole: it swallows them (time-outs)"
        ),
    ] = "reset",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="drill folder (default: <state>/chaos/<time>)"),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="rewrite this document's chaos block (docs/RELIABILITY.md)"),
    ] = None,
) -> None:
    """Run the stack on a private broker with a steady mixed load, inject the faults (SIGKILL
    the worker, restart the broker, cut an agent's network path, slow the gateway's upstream),
    then reconcile every event, dead letter, alert, triage record and lake file. Exits 1 when
    anything was lost or duplicated."""
    from sentinel.chaos.drill import Drill, DrillError, DrillPlan
    from sentinel.chaos.report import commit, print_report, record_in, write_reports

    plan = DrillPlan(
        seconds=seconds,
        rate=rate,
        agents=agents,
        malformed=malformed,
        cut_s=cut,
        slow_s=slow,
        latency_s=latency,
        seed=seed,
        cut_mode="blackhole" if cut_mode == "blackhole" else "reset",
    )
    if cut_mode not in ("reset", "blackhole"):
        raise _fail(f"--cut-mode must be reset or blackhole, got {cut_mode!r}", 2)
    try:
        plan.check()
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    if record is not None and not record.is_file():
        raise _fail(f"--record {record}: no such file", 2)
    root = out_dir or _settings().state_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    drill = Drill(plan, root, say=lambda line: err.print(line, highlight=False, markup=False))
    try:
        report = drill.run()
    except DrillError as exc:
        raise _fail(f"drill stopped: {exc}\nlogs in {root / 'logs'}") from None
    finally:
        drill.teardown()
    report.commit = commit()
    paths = write_reports(report)
    print_report(report, out)
    out.print(f"reports: {paths['html']} {paths['json']}", highlight=False)
    if record is not None:
        record_in(record, report)
        out.print(f"recorded in {record}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
