"""Settings come from SENTINEL_* variables, typed, with defaults for the embedded stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sentinel.settings import EMBEDDED_BOOTSTRAP, Settings


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTINEL_KAFKA_BOOTSTRAP", raising=False)
    settings = Settings()
    assert settings.kafka_bootstrap == EMBEDDED_BOOTSTRAP
    assert settings.kafka_embedded
    assert (settings.kafka_port, settings.kafka_controller) == (9092, 9093)
    assert settings.kafka_state_dir == settings.state_dir / "kafka"
    assert settings.state_dir.name == ".state"


def test_environment_variables_are_typed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTINEL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SENTINEL_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("SENTINEL_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    settings = Settings()
    assert settings.state_dir == tmp_path
    assert settings.kafka_partitions == 12
    assert (settings.kafka_port, settings.kafka_controller) == (19092, 19093)


@pytest.mark.parametrize(
    ("bootstrap", "external", "embedded"),
    [
        ("127.0.0.1:9092", False, True),
        ("localhost:9092", False, True),
        ("[::1]:9092", False, True),
        ("127.0.0.1:9092", True, False),
        ("kafka.internal:9092", False, False),
        ("127.0.0.1:9092,127.0.0.1:9094", False, False),
    ],
)
def test_only_a_single_loopback_bootstrap_is_managed_here(
    bootstrap: str, external: bool, embedded: bool
) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, kafka_external=external)
    assert settings.kafka_embedded is embedded


def test_bad_values_fail_with_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_KAFKA_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="kafka_partitions"):
        Settings()
