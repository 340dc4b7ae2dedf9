"""The acceptance bar: a real worker process and a real agent process with trusted keys run what
the service deployed (and report it in their heartbeats), and the worker rejects tampered, unsigned
and over-privileged packs, keeping its old rules."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import orjson

from sentinel.kafka import RULES
from sentinel.kafka.clients import producer
from services.policy.packs import folder_files
from tests.agents.agentproc import AgentProcess
from tests.services.policy.policytest import ADMIN_KEY, policy_settings, serve, write_pack
from tests.streams.conftest import StreamEnv, Worker


def _wait_heartbeats(client: object, want: dict[str, str], timeout_s: float = 60) -> dict:
    """GET /heartbeats until every instance kind in `want` reports that version of `tiny`."""
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        last = client.get("/heartbeats").json()  # type: ignore[attr-defined]
        seen = {i["kind"]: i["packs"].get("tiny") for i in last["instances"]}
        if all(seen.get(kind) == version for kind, version in want.items()):
            return last
        time.sleep(0.5)
    raise AssertionError(f"heartbeats never showed {want}: {last}")


def _wait_log(worker: Worker, text: str, count: int = 1, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = worker.log.read_text()
        if log.count(text) >= count:
            return log
        worker.check_alive()
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {worker.log}:\n{worker.log.read_text()[-3000:]}")


def test_a_worker_with_trusted_keys_runs_only_signed_allowed_packs(
    stream_env: StreamEnv, tmp_path: Path
) -> None:
    settings = policy_settings(tmp_path / "policy", stream_env.settings, policy_rules_topic=RULES)
    with serve(settings) as service:
        public = service.app.state.policy.key_path.with_suffix(".pub")
        author, approver = service.user("alice", "author"), service.user("bob", "approver")
        with service.client(author) as client:
            client.post("/packs", json={"name": "tiny"})
            for version, caps in (("1.0.0", "[]"), ("1.1.0", "[enrich]")):
                files = folder_files(write_pack(tmp_path / version, version, capabilities=caps))
                assert client.post("/packs/tiny/versions", json={"files": files}).status_code == 201
        with service.client(approver) as client:
            for version in ("1.0.0", "1.1.0"):
                assert client.post(f"/packs/tiny/versions/{version}/approve").status_code == 200
        trust = {
            "SENTINEL_RULES_TRUSTED_KEYS": str(public),
            "SENTINEL_RULES_ALLOWED_CAPABILITIES": "",  # the disk pack (not verified) may enrich
            "SENTINEL_HEARTBEAT_INTERVAL_S": "1",
        }
        stream_env.env = dict(stream_env.env, **trust)
        worker = stream_env.worker().start()
        agent = AgentProcess(
            stream_env.settings,
            tmp_path,
            {
                "host": {"id": "h-policy-1"},
                "stats_interval_s": 0.5,
                "sensors": {"scenario": {"rate": 50, "count": 100_000, "seed": 1}},
            },
            trust,
        ).start()
        try:
            with service.client(ADMIN_KEY) as admin:
                deployed = admin.post("/packs/tiny/versions/1.0.0/deploy", json={"target": "all"})
                assert deployed.status_code == 200, deployed.text
                worker.wait(lambda h: h["packs"].get("tiny") == "1.0.0", timeout_s=60)
                # Both report the version they switched to; the service follows their heartbeats.
                beats = _wait_heartbeats(admin, {"worker": "1.0.0", "agent": "1.0.0"})
                assert beats["running"]["tiny"] == {"1.0.0": 2}
                assert admin.post("/packs/tiny/versions/1.1.0/deploy", json={}).status_code == 200
                log = _wait_log(worker, "rule pack rejected")
                assert "capability not allowed: rule 'tiny.marker' asks for 'enrich'" in log
                deadline = time.monotonic() + 30
                while "capability not allowed" not in agent.log.read_text():
                    assert time.monotonic() < deadline, agent.tail()
                    time.sleep(0.5)
                # Heartbeats after the rejection still say 1.0.0 for both.
                time.sleep(2.5)
                beats = _wait_heartbeats(admin, {"worker": "1.0.0", "agent": "1.0.0"})
                assert beats["running"]["tiny"] == {"1.0.0": 2}
        finally:
            agent.stop()
        [record] = [
            r
            for r in stream_env.read_all(RULES)
            if r.key == b"tiny" and orjson.loads(r.value)["version"] == "1.0.0"
        ]
        tampered = orjson.loads(record.value)
        tampered["version"] = "1.2.0"
        unsigned = copy.deepcopy(tampered)
        del unsigned["signature"]
        unsigned["version"] = "1.3.0"
        sender = producer(stream_env.settings)
        for message in (tampered, unsigned):
            sender.send(RULES, key=b"tiny", value=orjson.dumps(message)).get(30)
        sender.close()
        log = _wait_log(worker, "rule pack rejected", count=3)
        assert "bad signature: pack 'tiny' 1.2.0" in log
        assert "unsigned: pack 'tiny' 1.3.0 has no signature" in log
        assert worker.health()["packs"]["tiny"] == "1.0.0", "the old rules keep running"
