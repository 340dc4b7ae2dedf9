"""The `sentinel` command as users run it: help everywhere, replay to a file, validate it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sentinel.settings import PROJECT_ROOT

COMMANDS = [
    [],
    ["kafka"],
    ["kafka", "up"],
    ["kafka", "down"],
    ["kafka", "status"],
    ["kafka", "logs"],
    ["topics"],
    ["topics", "create"],
    ["topics", "list"],
    ["contracts"],
    ["contracts", "validate"],
    ["replay"],
    ["demo"],
    ["dev"],
    ["lake"],
    ["lake", "run"],
    ["lake", "status"],
    ["lake", "reset"],
]


def sentinel(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "sentinel"), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sentinel")
def test_every_command_has_help(command: list[str]) -> None:
    result = sentinel(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: sentinel" in result.stdout
    assert len(result.stdout.strip().splitlines()) >= 4


def test_replayed_100k_mixed_file_validates_with_zero_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    made = sentinel("replay", "--scenario", "mixed", "--count", "100000", "--to", str(path))
    assert made.returncode == 0, made.stderr
    assert "sent 100,000 events to" in made.stdout
    checked = sentinel("contracts", "validate", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "100,000 lines: 100,000 valid, 0 bad" in checked.stdout
    assert sum(1 for _ in path.open("rb")) == 100_000


def test_validate_reports_each_bad_line_and_exits_nonzero(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    made = sentinel(
        "replay", "--scenario", "baseline", "--count", "200", "--malformed", "8", "--to", str(path)
    )
    assert made.returncode == 0, made.stderr
    lines = path.read_bytes().splitlines()
    assert len(lines) == 208
    checked = sentinel("contracts", "validate", str(path), "--kind", "event")
    assert checked.returncode == 1
    reported = [line for line in checked.stdout.splitlines() if line.startswith(f"{path}:line ")]
    assert len(reported) == 8
    for line in reported:
        number = int(line.split(":line ")[1].split(":")[0])
        raw = lines[number - 1]
        try:
            orjson.loads(raw)
            is_json = True
        except orjson.JSONDecodeError:
            is_json = False
        assert ("not JSON" in line) is not is_json, line
    assert "208 lines: 200 valid, 8 bad" in checked.stderr


def test_unknown_scenario_lists_the_valid_ones() -> None:
    result = sentinel("replay", "--scenario", "nope", "--count", "1", "--to", "/dev/null")
    assert result.returncode == 2
    assert "unknown scenario 'nope'" in result.stderr and "ssh-bruteforce" in result.stderr


def test_unknown_contract_kind_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    result = sentinel("contracts", "validate", str(path), "--kind", "evnt")
    assert result.returncode == 2 and "unknown contract 'evnt'" in result.stderr


def test_same_seed_same_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for path, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert (
            sentinel(
                "replay", "--count", "3000", "--seed", seed, "--to", str(path), "-q"
            ).returncode
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.kafka
def test_topics_create_is_idempotent_and_rules_topic_is_compacted(kafka: object) -> None:
    first = sentinel("topics", "create")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("exists") == 6, "the session fixture already created them"
    listed = sentinel("topics", "list")
    assert listed.returncode == 0
    rules = next(line for line in listed.stdout.splitlines() if "sentinel.rules.v1" in line)
    assert "cleanup.policy=compact" in rules
    events = next(line for line in listed.stdout.splitlines() if "sentinel.events.v1 " in line)
    assert " 6 " in events


@pytest.mark.kafka
def test_replay_command_produces_to_the_broker(kafka: object) -> None:
    from sentinel.kafka import EVENTS
    from sentinel.kafka.topics import message_counts
    from sentinel.settings import Settings

    settings = Settings()
    before = message_counts(settings, [EVENTS])[EVENTS]
    result = sentinel(
        "replay", "--scenario", "ssh-bruteforce", "--count", "3000", "--malformed", "5"
    )
    assert result.returncode == 0, result.stderr
    assert "sent 3,005 events to sentinel.events.v1" in result.stdout
    assert "errors: 0" in result.stdout
    assert message_counts(settings, [EVENTS])[EVENTS] - before == 3005
