"""The audit log: every change leaves a chained entry; editing one in the database is caught."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from pathlib import Path

from sentinel.settings import PROJECT_ROOT
from services.policy.packs import folder_files
from tests.services.policy.policytest import Service, write_pack


def _policy(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "SENTINEL_STATE_DIR": str(service.settings.state_dir),
        "SENTINEL_LOG_LEVEL": "warning",
    }
    return subprocess.run(
        [sys.executable, "-c", "from services.policy.cli import app; app()", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_change_is_chained_and_an_edited_row_breaks_verify_at_that_entry(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    with service.client(team["alice"]) as author:
        assert author.post("/packs", json={"name": "tiny"}, headers={"X-Request-ID": "req-42"})
        files = folder_files(write_pack(tmp_path))
        assert author.post("/packs/tiny/versions", json={"files": files}).status_code == 201
    with service.client(team["bob"]) as approver:
        assert approver.post("/packs/tiny/versions/1.0.0/approve").status_code == 200
        entries = approver.get("/audit").json()
        assert approver.get("/audit/verify").json() == {
            "ok": True,
            "entries": len(entries),
            "broken_at": None,
            "reason": "",
        }
    actions = [(e["actor"], e["action"], e["subject"]) for e in entries]
    assert actions[-3:] == [
        ("alice", "pack.create", "pack:tiny"),
        ("alice", "version.upload", "pack:tiny@1.0.0"),
        ("bob", "version.approve", "pack:tiny@1.0.0"),
    ]
    assert [e["action"] for e in entries[:-3]] == ["user.create"] * 7  # bootstrap admin + team
    assert entries[-3]["request_id"] == "req-42"
    upload = entries[-2]
    assert upload["after_digest"] and upload["detail"]["tests_passed"] == 2
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    ok = _policy(service, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert f"audit chain ok: {len(entries)} entries" in ok.stdout

    db = sqlite3.connect(service.settings.state_dir / "policy" / "policy.db")
    try:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE id = ?", (upload["id"],))
        raise AssertionError("the database let an audit row change")
    except sqlite3.IntegrityError as exc:
        assert "append-only" in str(exc)
    db.execute("DROP TRIGGER audit_no_update")  # someone with write access to the file
    db.execute("UPDATE audit SET actor = 'mallory' WHERE id = ?", (upload["id"],))
    db.commit()
    db.close()
    broken = _policy(service, "audit", "verify")
    assert broken.returncode == 1
    assert f"audit chain broken at entry {upload['id']}: its contents do not match" in broken.stderr
    with service.client(team["vera"]) as viewer:
        report = viewer.get("/audit/verify").json()
    assert report["ok"] is False and report["broken_at"] == upload["id"]


def test_a_deleted_entry_breaks_the_chain_where_it_was(
    service: Service, team: dict[str, str]
) -> None:
    db = sqlite3.connect(service.settings.state_dir / "policy" / "policy.db")
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit WHERE id = 3")
    db.commit()
    db.close()
    with service.client(team["vera"]) as viewer:
        report = viewer.get("/audit/verify").json()
    assert report == {
        "ok": False,
        "entries": 3,
        "broken_at": 4,
        "reason": "entry 3 is missing (next is 4)",
    }
