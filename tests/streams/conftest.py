"""Fixtures for stream tests: a private broker per test and real `faust ... worker` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sentinel.kafka import EVENTS, EmbeddedBroker, ensure_contract_topics, free_port, offsets
from sentinel.settings import Settings
from streams.process import health, spawn_worker


@dataclass
class StreamEnv:
    settings: Settings
    env: dict[str, str]
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, name: str = "w1") -> Worker:
        port = free_port()
        env = dict(self.env, SENTINEL_STREAMS_WEB_PORT=str(port))
        worker = Worker(env, port, self.logs / f"{name}-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def committed(self) -> int:
        """Events the worker group has committed on the events topic."""
        return sum(
            offsets.committed(self.settings, self.settings.streams_detection_group, EVENTS).values()
        )

    def wait_committed(self, total: int, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.committed() >= total:
                return
            for w in self.workers:
                w.check_alive()
            time.sleep(1)
        raise AssertionError(
            f"only {self.committed()} of {total} events committed; logs in {self.logs}"
        )

    def read_all(self, topic: str) -> list[Any]:
        return offsets.read_from(self.settings, topic)


class Worker:
    """`faust -A streams.app worker -l info` as a user starts it, with its log in a file."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # killed on purpose: its exit is not a failure

    def start(self) -> Worker:
        self.proc = spawn_worker(self.env, self.log)
        self.wait(lambda h: h.get("status") == "ok", timeout_s=90)
        return self

    def health(self) -> dict[str, Any]:
        answer = health(self.port)
        if answer is None:
            raise OSError(f"no answer from 127.0.0.1:{self.port}/health")
        return answer

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def check_alive(self) -> None:
        if not self.stopped and self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.proc.returncode}; see {self.log}:\n"
                + self.log.read_text()[-3000:]
            )

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = self.health()
                if predicate(last):
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker never reached the state; last health {last}; see {self.log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def stream_env(tmp_path: Path, kafka: Settings) -> Iterator[StreamEnv]:
    """A private broker (fresh topics), settings and env for workers of a unique app id."""
    bootstrap = f"127.0.0.1:{free_port()}"
    settings = Settings(
        state_dir=tmp_path / "state",
        cache_dir=kafka.cache_dir,
        kafka_bootstrap=bootstrap,
        kafka_controller_port=free_port(),
        kafka_heap="512m",
        streams_app_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    broker = EmbeddedBroker(settings, say=lambda _: None)
    broker.start()
    ensure_contract_topics(settings)
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(settings.state_dir),
        SENTINEL_KAFKA_BOOTSTRAP=bootstrap,
        SENTINEL_STREAMS_APP_ID=settings.streams_app_id,
        SENTINEL_LOG_FORMAT="json",
        # Triage needs a gateway: the tests that want it start one and turn it on.
        SENTINEL_TRIAGE_ENABLED="false",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    stream = StreamEnv(settings, env, logs)
    yield stream
    for worker in stream.workers:
        worker.kill()
    broker.stop(timeout_s=15)
