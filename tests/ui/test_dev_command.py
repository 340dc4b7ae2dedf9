"""`make dev` (`sentinel dev`): broker, a detection worker and the Dagster UI together, and gone on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sentinel.kafka import free_port
from sentinel.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.kafka


def _children_of(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc (no psutil)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_serves_the_ui_a_gateway_and_a_worker_and_stops_them_all_on_sigterm(
    kafka: Settings, tmp_path: Path
) -> None:
    ui, web, gateway = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp_path / "state"),
        SENTINEL_KAFKA_BOOTSTRAP=kafka.kafka_bootstrap,
        SENTINEL_KAFKA_EXTERNAL="true",  # the session broker belongs to the test run
        SENTINEL_DAGSTER_PORT=str(ui),
        SENTINEL_STREAMS_WEB_PORT=str(web),
        SENTINEL_GATEWAY_PORT=str(gateway),
        SENTINEL_STREAMS_APP_ID=f"test-dev-{uuid.uuid4().hex[:8]}",
        SENTINEL_LAKE_AUTOMATION="false",
    )
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [str(Path(sys.executable).parent / "sentinel"), "dev"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        ui_ok = worker_ok = gateway_ok = False
        while time.monotonic() < deadline and not (ui_ok and worker_ok and gateway_ok):
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                ui_ok = (
                    httpx.get(f"http://127.0.0.1:{ui}/server_info", timeout=2).status_code == 200
                )
                health = httpx.get(f"http://127.0.0.1:{web}/health", timeout=2).json()
                worker_ok = health.get("status") == "ok"
                gateway_ok = (
                    httpx.get(f"http://127.0.0.1:{gateway}/health", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert ui_ok and worker_ok and gateway_ok, (tmp_path / "dev.log").read_text()[-3000:]
        key = (tmp_path / "state" / "gateway" / "embedded-client.key").read_text().strip()
        models = httpx.get(
            f"http://127.0.0.1:{gateway}/v1/models",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        ).json()
        assert "extractive-triage" in {m["id"] for m in models["data"]}
        children = _children_of(dev.pid)
        assert len(children) >= 3, (
            "the gateway, the worker and the UI are children of `sentinel dev`"
        )

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=90) == 0, (tmp_path / "dev.log").read_text()[-3000:]
        time.sleep(2)
        left = [pid for pid in children if _alive(pid)]
        assert not left, f"left running after SIGTERM: {left}"
        assert "the broker keeps running" in (tmp_path / "dev.log").read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
        log.close()
