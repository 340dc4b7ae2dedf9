"""gateway.yaml: the default loads offline; mistakes name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.settings import Settings
from services.gateway.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config


def test_default_config_loads_with_an_offline_model_and_a_vllm_fallback_chain(
    gw_settings: Settings,
) -> None:
    config = load_config(gw_settings, environ={})
    assert config.source == str(DEFAULT_CONFIG)
    assert [t.upstream for t in config.models["extractive-triage"].targets] == ["extractive"]
    assert [t.upstream for t in config.models["triage-llm"].targets] == ["vllm", "extractive"]
    assert config.upstream("vllm").base_url == "http://127.0.0.1:8000/v1"
    assert config.upstream("vllm").api_key is None


def test_api_key_env_is_read_when_loading(gw_settings: Settings) -> None:
    config = load_config(gw_settings, environ={"SENTINEL_VLLM_API_KEY": "sk-vllm"})
    assert config.upstream("vllm").api_key == "sk-vllm"


def test_unknown_field_names_the_file_and_the_field(tmp_path: Path, gw_settings: Settings) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "upstreams:\n  - {name: x, kind: extractive, timeout: 3}\n"
        "models:\n  m: {targets: [{upstream: x, model: m}]}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(gw_settings, path)
    assert str(path) in str(error.value)
    assert "upstreams.0.timeout: Extra inputs are not permitted" in str(error.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {
                "upstreams": [{"name": "x", "kind": "extractive"}],
                "models": {"m": {"targets": [{"upstream": "y", "model": "m"}]}},
            },
            "models.m.targets.0.upstream: unknown upstream 'y'",
        ),
        (
            {
                "upstreams": [{"name": "x", "kind": "openai"}],
                "models": {"m": {"targets": [{"upstream": "x", "model": "m"}]}},
            },
            "upstream 'x' of kind openai needs base_url",
        ),
        (
            {
                "upstreams": [{"name": "x", "kind": "extractive"}],
                "models": {"m": {"targets": [{"upstream": "x", "model": "m"}]}},
                "redaction": {"patterns": ["(unclosed"]},
            },
            "redaction: Value error, pattern '(unclosed' is not a valid regex",
        ),
    ],
)
def test_config_mistakes_are_explained(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match="<test>") as error:
        parse_config(raw, "<test>", {})
    assert expected in str(error.value)
