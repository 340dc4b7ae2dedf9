"""`sentinel policy ...` (services/policy/cli.py): help everywhere, keys, users, upload."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel.rules.signing import load_private_key, load_trusted_keys
from services.policy.cli import app
from tests.services.policy.policytest import Service, write_pack

runner = CliRunner()
COMMANDS = [[], ["serve"], ["keygen"], ["users"], ["users", "create"], ["audit"],
            ["audit", "verify"], ["packs"], ["packs", "upload"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "policy")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_keygen_writes_a_key_pair_named_by_its_id(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keygen", str(tmp_path)])
    assert result.exit_code == 0, result.output
    key_id = result.output.split()[2]
    _, loaded = load_private_key(tmp_path / f"{key_id}.key")
    assert loaded == key_id and list(load_trusted_keys(tmp_path)) == [key_id]


def test_users_create_prints_a_key_that_works_once_and_refuses_duplicates(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.settings import get_settings

    monkeypatch.setenv("SENTINEL_STATE_DIR", str(service.settings.state_dir))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["users", "create", "--name", "erin", "--role", "approver"])
        assert result.exit_code == 0, result.output
        key = result.stdout.strip().splitlines()[-1]
        with service.client(key) as client:
            assert client.get("/whoami").json() == {"name": "erin", "role": "approver"}
        again = runner.invoke(app, ["users", "create", "--name", "erin", "--role", "viewer"])
        assert again.exit_code == 1 and "user 'erin' exists" in again.output
        wrong = runner.invoke(app, ["users", "create", "--name", "x", "--role", "root"])
        assert wrong.exit_code == 2 and "unknown role 'root'" in wrong.output
    finally:
        get_settings.cache_clear()


def test_packs_upload_sends_a_folder_and_prints_test_failures(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    url = ["--url", service.url, "--key", team["alice"]]
    good = runner.invoke(app, ["packs", "upload", str(write_pack(tmp_path)), *url])
    assert good.exit_code == 0, good.output
    assert "as version 1.0.0: 1 rules, 2 golden tests passed" in good.output
    broken = write_pack(tmp_path, "1.1.0", rule="emit(#{ ;")
    bad = runner.invoke(app, ["packs", "upload", str(broken), *url])
    assert bad.exit_code == 1
    assert "compile: marker.rhai:1:" in bad.output and "tiny.marker" in bad.output
    assert "422: rules do not compile" in bad.output
