"""The gateway's key store and the policy service on a real PostgreSQL server (by URL), the
server-grade counterpart of their SQLite defaults."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from sentinel.settings import Settings, sqlalchemy_url
from services.gateway.config import load_config
from services.gateway.keys import KeyStore
from services.gateway.server import serve_in_thread
from services.policy.packs import folder_files
from tests.services.policy.policytest import policy_settings, serve, write_pack

KEY = "sk-test-postgres-0123456789abcdef"


def test_postgres_urls_open_with_the_shipped_psycopg_driver() -> None:
    assert sqlalchemy_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_gateway_keys_and_usage_live_in_postgres(tmp_path: Path, postgres_db: str) -> None:
    settings = Settings(
        state_dir=tmp_path / "state", gateway_db_url=postgres_db, gateway_api_key=KEY
    )
    with serve_in_thread(load_config(settings), settings) as gateway:
        body = {
            "model": "extractive-triage",
            "messages": [{"role": "user", "content": "triage this"}],
        }
        for rule in ("core.reverse_shell", "core.reverse_shell", "core.port_scan"):
            answer = httpx.post(
                f"{gateway.base_url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {KEY}", "X-Sentinel-Rule": rule},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        wrong = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-not-a-key"},
            timeout=30,
        )
        assert wrong.status_code == 401
    store = KeyStore(settings.gateway_database_url)
    try:
        usage = {(u.rule, u.requests) for u in store.usage()}
    finally:
        store.close()
    assert usage == {("core.reverse_shell", 2), ("core.port_scan", 1)}
    with psycopg.connect(postgres_db) as conn:
        stored = [row[0] for row in conn.execute("SELECT key_hash FROM gateway_keys")]
    assert len(stored) == 1 and KEY not in stored[0] and len(stored[0]) == 64


def test_policy_service_migrates_postgres_and_its_audit_chain_holds(
    tmp_path: Path, postgres_db: str
) -> None:
    # No deploys and no heartbeats here: nothing of this test touches Kafka.
    settings = policy_settings(
        tmp_path / "state", Settings(), policy_db_url=postgres_db, policy_follow_heartbeats=False
    )
    with serve(settings) as service:
        author, approver = service.user("alice", "author"), service.user("bob", "approver")
        with service.client(author) as client:
            assert client.post("/packs", json={"name": "tiny"}).status_code == 201
            files = folder_files(write_pack(tmp_path / "pack"))
            assert client.post("/packs/tiny/versions", json={"files": files}).status_code == 201
            own = client.post("/packs/tiny/versions/1.0.0/approve")
            assert own.status_code == 403, "an author cannot approve"
        with service.client(approver) as client:
            assert client.post("/packs/tiny/versions/1.0.0/approve").status_code == 200
            report = client.get("/audit/verify").json()
            entries = client.get("/audit").json()
        assert report["ok"] and report["entries"] == len(entries) >= 5
        target = entries[-1]["id"]
        with psycopg.connect(postgres_db, autocommit=True) as conn:
            # The append-only trigger refuses edits and deletes ...
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = %s", (target,))
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute("DELETE FROM audit WHERE id = %s", (target,))
            # ... and an edit behind its back (a superuser turning it off) breaks the chain there.
            conn.execute("ALTER TABLE audit DISABLE TRIGGER USER")
            conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = %s", (target,))
        with service.client(approver) as client:
            broken = client.get("/audit/verify").json()
        assert not broken["ok"] and broken["broken_at"] == target
