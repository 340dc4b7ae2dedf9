"""Helpers of the policy tests: a small pack folder, the service in a thread, signed messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sentinel.kafka import free_port
from sentinel.settings import Settings
from services.policy.app import create_app

ADMIN_KEY = "spk_test-admin-key-0123456789"

RULE = """// A marker: fires on the exact command line the tests use.
if event.proc.cmdline == "policy-marker" {
    emit(#{ context: #{ cmdline: event.proc.cmdline } });
}
"""

TEST = """rule: tiny.marker
defaults:
  kind: proc
  proc: {action: exec, pid: 1, ppid: 0, exe: /bin/true, user: root, uid: 0}
cases:
  - name: the marker fires
    events:
      - proc: {cmdline: policy-marker}
    expect:
      - severity: low
        context: {cmdline: policy-marker}
  - name: anything else is a near miss
    events:
      - proc: {cmdline: ls}
    expect: []
"""


def write_pack(
    root: Path,
    version: str = "1.0.0",
    rule: str = RULE,
    test: str = TEST,
    name: str = "tiny",
    capabilities: str = "[]",
) -> Path:
    """A one-rule pack folder with golden tests (`rule`/`test` let a test break either)."""
    path = root / f"{name}-{version}"
    (path / "tests").mkdir(parents=True)
    (path / "pack.yaml").write_text(
        f"name: {name}\nversion: {version}\ndescription: a pack for the policy tests\n"
        "rules:\n  - id: tiny.marker\n    file: marker.rhai\n    title: Policy test marker\n"
        f"    severity: low\n    kinds: [proc]\n    mitre: [T1059]\n"
        f"    capabilities: {capabilities}\n"
    )
    (path / "marker.rhai").write_text(rule)
    (path / "tests" / "marker.yaml").write_text(test)
    return path


@dataclass
class Service:
    url: str
    settings: Settings
    app: Any
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def user(self, name: str, role: str) -> str:
        """An API key for a new user with `role` (made by the bootstrap admin)."""
        with self.client(ADMIN_KEY) as admin:
            answer = admin.post("/users", json={"name": name, "role": role})
        assert answer.status_code == 201, answer.text
        key = str(answer.json()["api_key"])
        self.keys[name] = key
        return key


@contextmanager
def serve(settings: Settings) -> Iterator[Service]:
    """The real app on uvicorn on a loopback port, in a thread, stopped at the end."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.policy_port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the policy service did not start")
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{settings.policy_port}", settings, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def policy_settings(state_dir: Path, kafka: Settings, **extra: Any) -> Settings:
    return Settings(
        state_dir=state_dir,
        cache_dir=kafka.cache_dir,
        kafka_bootstrap=kafka.kafka_bootstrap,
        policy_port=free_port(),
        policy_bootstrap_admin_key=ADMIN_KEY,
        **extra,
    )
