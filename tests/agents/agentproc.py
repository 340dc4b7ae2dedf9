"""Test helpers: `sentinel agent run` as a user starts it, and a tail of a topic by host key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from sentinel.settings import PROJECT_ROOT, Settings

Event = dict[str, Any]


class AgentProcess:
    """`sentinel agent run --config FILE` in a child process, its log in a file."""

    def __init__(
        self, settings: Settings, tmp: Path, config: dict[str, Any], env: dict[str, str] | None
    ) -> None:
        self.settings = settings
        self.state = tmp / "state"
        self.config_path = tmp / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.host = str(config["host"]["id"])
        self.log = tmp / "agent.log"
        self.env = {
            **os.environ,
            "SENTINEL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "SENTINEL_KAFKA_EXTERNAL": "true",
            "SENTINEL_STATE_DIR": str(self.state),
            "SENTINEL_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def stats_path(self) -> Path:
        return self.state / "agent" / self.host / "stats.json"

    def start(self, ready_timeout_s: float = 60) -> AgentProcess:
        self.stats_path.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel.cli", "agent", "run", "-c", str(self.config_path)],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ready once the sensors started: "agent started" is logged after every start().
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if b'"agent started"' in self.log.read_bytes():
                return self
            self.check_alive()
            time.sleep(0.1)
        raise AssertionError(f"agent not started in {ready_timeout_s}s:\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.tail()}")

    def stats(self) -> dict[str, Any]:
        return orjson.loads(self.stats_path.read_bytes())  # type: ignore[no-any-return]

    def wait_stats(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.stats_path.exists():
                try:
                    last = self.stats()
                except orjson.JSONDecodeError:
                    last = {}
                if last and predicate(last):
                    return last
            self.check_alive()
            time.sleep(0.2)
        raise AssertionError(f"agent stats never matched; last: {last}\n{self.tail()}")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (a clean shutdown), then the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent did not stop on SIGTERM:\n{self.tail()}") from None
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logged(self, message: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_bytes().splitlines():
            if line.startswith(b"{"):
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if entry.get("event") == message:
                    found.append(entry)
        return found


class Tail:
    """Every record of `topic` written after creation whose key is `host` (polled on demand)."""

    def __init__(self, settings: Settings, topic: str, host: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.key = host.encode()
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
        )
        parts: set[int] = set()
        deadline = time.monotonic() + 30  # a topic just created may not be in metadata yet
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic) or set()
            if not parts:
                self.consumer.topics()  # refreshes the metadata
                time.sleep(0.2)
        assert parts, f"topic {topic} has no partitions in the broker's metadata"
        self.tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            self.consumer.position(tp)  # resolve "end" now, not at the first poll
        self.records: list[Any] = []

    @property
    def events(self) -> list[Event]:
        return [orjson.loads(r.value) for r in self.records]

    def poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=200, max_records=10_000).values():
            self.records.extend(r for r in batch if r.key == self.key)

    def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float, what: str) -> Event:
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e["kind"], e.get(e["kind"])) for e in self.events[-20:]]
                raise AssertionError(f"no {what} within {timeout_s}s; last events: {seen}")
            self.poll()

    def wait_count(self, count: int, timeout_s: float) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            self.poll()
        return self.events

    def close(self) -> None:
        self.consumer.close()
