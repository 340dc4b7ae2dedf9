"""`sentinel kafka up|down|status`: a second, private broker on free ports, driven through the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.kafka import EmbeddedBroker, answers_metadata, free_port
from sentinel.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.kafka


@pytest.fixture
def private_env(tmp_path: Path, kafka: Settings) -> Iterator[dict[str, str]]:
    """Environment for a broker of its own: fresh state dir, free ports, the shared jar cache."""
    port = free_port()
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp_path / "state"),
        SENTINEL_CACHE_DIR=str(kafka.cache_dir),
        SENTINEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        SENTINEL_KAFKA_CONTROLLER_PORT=str(free_port()),
        SENTINEL_KAFKA_HEAP="384m",
    )
    yield env
    # Never leave a JVM behind, whatever the test did.
    EmbeddedBroker(
        Settings(
            state_dir=tmp_path / "state",
            cache_dir=kafka.cache_dir,
            kafka_bootstrap=env["SENTINEL_KAFKA_BOOTSTRAP"],
            kafka_controller_port=int(env["SENTINEL_KAFKA_CONTROLLER_PORT"]),
        ),
        say=lambda _: None,
    ).stop(timeout_s=10)


def sentinel(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "sentinel"), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _pid(env: dict[str, str]) -> int:
    return int((Path(env["SENTINEL_STATE_DIR"]) / "kafka" / "broker.pid").read_text())


def test_up_twice_starts_one_broker_down_stops_it_and_status_tells(
    private_env: dict[str, str],
) -> None:
    bootstrap = private_env["SENTINEL_KAFKA_BOOTSTRAP"]
    stopped = sentinel(private_env, "kafka", "status")
    assert stopped.returncode == 3 and "stopped" in stopped.stdout

    first = sentinel(private_env, "kafka", "up")
    assert first.returncode == 0, first.stderr
    assert "formatted KRaft storage" in first.stderr
    assert f"running (pid {_pid(private_env)}) at {bootstrap}" in first.stdout
    pid = _pid(private_env)
    assert answers_metadata(bootstrap)

    second = sentinel(private_env, "kafka", "up")
    assert second.returncode == 0, second.stderr
    assert f"already running (pid {pid})" in second.stderr
    assert _pid(private_env) == pid
    java = subprocess.run(
        ["pgrep", "-f", private_env["SENTINEL_STATE_DIR"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert java.stdout.split() == [str(pid)], "exactly one broker process for this state dir"

    running = sentinel(private_env, "kafka", "status")
    assert running.returncode == 0 and f"running (pid {pid})" in running.stdout

    down = sentinel(private_env, "kafka", "down")
    assert down.returncode == 0 and f"stopped broker (pid {pid})" in down.stderr
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not answers_metadata(bootstrap, timeout_s=1)
    data = Path(private_env["SENTINEL_STATE_DIR"]) / "kafka" / "data" / "meta.properties"
    assert data.exists(), "down keeps the data"

    after = sentinel(private_env, "kafka", "status")
    assert after.returncode == 3 and "stopped" in after.stdout
    again = sentinel(private_env, "kafka", "down")
    assert "no broker started by this project is running" in again.stdout


def test_data_survives_restart_and_reset_wipes_it(private_env: dict[str, str]) -> None:
    assert sentinel(private_env, "kafka", "up").returncode == 0
    assert sentinel(private_env, "topics", "create").returncode == 0
    assert sentinel(private_env, "kafka", "down").returncode == 0
    restarted = sentinel(private_env, "kafka", "up")
    assert "formatted" not in restarted.stderr
    listed = sentinel(private_env, "topics", "list")
    assert listed.returncode == 0 and "sentinel.rules.v1" in listed.stdout
    assert "missing" not in listed.stdout
    reset = sentinel(private_env, "kafka", "up", "--reset")
    assert reset.returncode == 0 and "wiped" in reset.stderr and "formatted" in reset.stderr
    wiped = sentinel(private_env, "topics", "list")
    assert wiped.returncode == 1 and "missing" in wiped.stdout


def test_external_bootstrap_starts_nothing(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp_path),
        SENTINEL_KAFKA_BOOTSTRAP="kafka-0.example:9092,kafka-1.example:9092",
    )
    up = sentinel(env, "kafka", "up")
    assert up.returncode == 0 and "external cluster at kafka-0.example:9092" in up.stdout
    assert not (tmp_path / "kafka").exists()
    status = sentinel(env, "kafka", "status")
    assert status.returncode == 0 and "not managed here" in status.stdout


def test_port_taken_by_a_foreign_process_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = dict(
            os.environ,
            SENTINEL_STATE_DIR=str(tmp_path),
            SENTINEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        )
        up = sentinel(env, "kafka", "up")
    assert up.returncode == 1
    assert (
        f"127.0.0.1:{port} is already in use by a process this project did not start" in up.stderr
    )


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp_path),
        PATH=str(Path(sys.executable).parent),
        SENTINEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    up = sentinel(env, "kafka", "up")
    assert up.returncode == 1
    assert "Java 17 or newer is needed" in up.stderr


def test_missing_maven_without_cached_jars_is_a_clear_error(tmp_path: Path) -> None:
    java = Path(
        subprocess.run(
            ["sh", "-c", "command -v java"], capture_output=True, text=True, check=True
        ).stdout.strip()
    ).resolve()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp_path / "state"),
        SENTINEL_CACHE_DIR=str(tmp_path / "cache"),
        PATH=f"{bin_dir}:{Path(sys.executable).parent}",
        SENTINEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    up = sentinel(env, "kafka", "up")
    assert up.returncode == 1
    assert "Maven (mvn) is needed once to fetch the Kafka" in up.stderr


def test_bad_bootstrap_setting_names_the_variable(tmp_path: Path) -> None:
    env = dict(os.environ, SENTINEL_KAFKA_BOOTSTRAP="localhost")
    status = sentinel(env, "kafka", "status")
    assert status.returncode == 2
    assert (
        "SENTINEL_KAFKA_BOOTSTRAP" in status.stderr
        and "'localhost' is not host:port" in status.stderr
    )
