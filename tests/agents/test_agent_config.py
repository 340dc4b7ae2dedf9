"""agent.yaml: the embedded default loads, typos and bad values are reported by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.config import ConfigError, load_config
from sentinel.cli import app


def test_the_embedded_default_names_real_sensors() -> None:
    from agents.sensors import SENSORS

    config = load_config()
    assert set(config.sensors) <= set(SENSORS)
    assert config.policy("net").on_full == "drop" and config.policy("proc").on_full == "block"
    assert config.host_identity()["os"] == "linux"


def test_a_typo_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("queue_sise: 10\n")
    with pytest.raises(ConfigError, match="queue_sise: Extra inputs are not permitted"):
        load_config(path)


def test_a_bad_value_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("kinds:\n  dns: {sample: 1.5}\n")
    with pytest.raises(
        ConfigError, match=r"kinds\.dns\.sample: Input should be less than or equal to 1"
    ):
        load_config(path)


def test_cli_sensors_says_what_each_sensor_lacks(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"sensors:\n  inotify: {{paths: [{tmp_path}/missing]}}\n  scenario: {{}}\n")
    result = CliRunner().invoke(app, ["agent", "sensors", "--config", str(path)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "yes" in rows["scenario"]
    assert "missing" in rows["inotify"] and "no" in rows["inotify"]
    assert "Windows" in rows["etw"]


def test_cli_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("- not a mapping\n")
    result = CliRunner().invoke(app, ["agent", "run", "--config", str(path)])
    assert result.exit_code == 2
    assert "expected a mapping" in result.output


def test_cli_status_prints_the_last_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentinel.settings import get_settings

    monkeypatch.setenv("SENTINEL_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    path = tmp_path / "agent.yaml"
    path.write_text("host: {id: status-host}\n")
    runner = CliRunner()
    try:
        missing = runner.invoke(app, ["agent", "status", "--config", str(path)])
        assert missing.exit_code == 1 and "no stats yet" in missing.output
        stats_dir = tmp_path / "agent" / "status-host"
        stats_dir.mkdir(parents=True)
        (stats_dir / "stats.json").write_text('{"host": "status-host", "produced": 1234}')
        shown = runner.invoke(app, ["agent", "status", "--config", str(path)])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    assert '"produced": 1234' in shown.output
