"""The demo's agent step on this host: real sensors, everything shipped, the files it touched seen."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from rich.console import Console

from sentinel.demo import run_agent
from sentinel.kafka import EVENTS
from sentinel.settings import Settings
from tests.agents.agentproc import Tail


def test_the_demo_agent_ships_this_hosts_events(kafka: Settings, tmp_path: Path) -> None:
    settings = kafka.model_copy(update={"state_dir": tmp_path})

    tail = Tail(kafka, EVENTS, socket.gethostname())
    output = io.StringIO()
    try:
        stats = run_agent(settings, Console(file=output, width=200))
        events = tail.wait_count(stats["produced"], timeout_s=30)
    finally:
        tail.close()
    assert set(stats["sensors"]) == {"bcc-exec", "netconn", "inotify"}  # root + agent-deps here
    assert stats["spool"]["pending"] == 0 and stats["produced"] == stats["accepted"] > 0
    probe = str(tmp_path / "demo-agent" / "probe.txt")
    actions = [
        e["file"]["action"] for e in events if e["kind"] == "file" and e["file"]["path"] == probe
    ]
    assert actions[0] == "create" and actions[-1] == "delete" and "modify" in actions
    assert any(e["kind"] == "proc" and e["proc"]["exe"].endswith("/uname") for e in events)
    shown = [line for line in output.getvalue().splitlines() if "events produced" in line]
    assert shown and f"{stats['produced']:,}" in shown[0]
