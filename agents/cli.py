"""`sentinel agent ...`: run the host agent, check which sensors this host can run, show stats."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sentinel.console import err, out

app = typer.Typer(
    help="The host agent: sensors -> disk spool -> sentinel.events.v1.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="agent.yaml (default: the embedded agents/agent.yaml)"),
]


def _load(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from agents.config import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command("run")
def run(
    config: ConfigOption = None,
    host_id: Annotated[str | None, typer.Option(help="override host.id")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until signalled)")
    ] = None,
) -> None:
    """Start the configured sensors and publish their events; SIGTERM or Ctrl-C stops cleanly."""
    from agents.agent import Agent, AgentError, tune_gc
    from agents.sensors import SensorUnavailable
    from sentinel.settings import get_settings

    cfg = _load(config, {"host": {"id": host_id}} if host_id else None)
    try:
        agent = Agent(cfg, get_settings())
    except AgentError as exc:
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    tune_gc()  # this process is the agent
    try:
        stats = agent.run(duration_s=duration)
    except SensorUnavailable as exc:
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(
        f"agent {stats['host']} stopped: produced {stats['produced']:,}, "
        f"spool pending {stats['spool']['pending']:,}, dropped {stats['dropped']:,}, "
        f"sampled {stats['sampled']:,}, filtered {stats['filtered']:,}, "
        f"invalid {stats['invalid']:,}",
        highlight=False,
    )


@app.command("sensors")
def sensors(config: ConfigOption = None) -> None:
    """Every known sensor: configured or not, and what this host lacks to run it."""
    from agents.sensors import SENSORS, create

    cfg = _load(config)
    table = Table("sensor", "configured", "can run here", "missing")
    for name in SENSORS:
        options = dict(cfg.sensors.get(name) or {})
        options.pop("enabled", None)
        try:
            missing = create(name, options).check()
        except Exception as exc:  # an import error names the missing package
            missing = [f"cannot load: {exc}"]
        table.add_row(
            name,
            "yes" if name in cfg.sensors else "",
            "[green]yes[/]" if not missing else "[red]no[/]",
            "; ".join(missing),
        )
    out.print(table)


@app.command("status")
def status(config: ConfigOption = None) -> None:
    """The last stats the agent of this host wrote (counters, spool depth, rule packs)."""
    import orjson

    from sentinel.settings import get_settings

    cfg = _load(config)
    path = cfg.agent_dir(get_settings()) / "stats.json"
    if not path.exists():
        err.print(f"no stats yet at {path}: is the agent running for host {cfg.host_id}?")
        raise typer.Exit(1)
    out.print_json(orjson.dumps(orjson.loads(path.read_bytes())).decode())
