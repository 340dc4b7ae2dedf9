"""`sentinel gateway keys ...` and `usage`: the key is printed once, stored as a hash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel.settings import Settings, get_settings
from services.gateway.cli import app
from services.gateway.keys import KeyStore, today


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("SENTINEL_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_keys_create_list_revoke_and_usage(cli_settings: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(
        app,
        ["keys", "create", "--name", "triage", "--models", "extractive-triage", "--rpm", "60"],
    )
    assert created.exit_code == 0, created.output
    plain = created.stdout.strip().splitlines()[-1]
    assert plain.startswith("sgw-")
    store = KeyStore(cli_settings.gateway_database_url)
    key = store.find(plain)
    assert key is not None and key.models == ("extractive-triage",) and key.rpm == 60
    store.add_usage({(key.id, today(), "extractive-triage", "r1"): [3, 30, 9]})
    store.close()

    listed = runner.invoke(app, ["keys", "list"])
    assert "triage" in listed.stdout and key.prefix in listed.stdout
    assert plain not in listed.stdout
    usage = runner.invoke(app, ["usage"])
    assert usage.exit_code == 0
    assert "r1" in usage.stdout and "30" in usage.stdout
    duplicate = runner.invoke(app, ["keys", "create", "--name", "triage"])
    assert duplicate.exit_code == 1
    assert "exists" in duplicate.output
    revoked = runner.invoke(app, ["keys", "revoke", "triage"])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list"]).stdout


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["usage"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
