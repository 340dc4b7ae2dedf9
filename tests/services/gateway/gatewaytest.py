"""Helpers of the gateway tests: configurations over fake upstreams, request bodies, SSE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from services.gateway.config import GatewayConfig, parse_config
from services.gateway.server import GatewayHandle

# `serve(config)`: the gateway under uvicorn (the `serve` fixture).
Serve = Callable[[GatewayConfig], AbstractContextManager[GatewayHandle]]


def openai_upstream(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "openai",
        "base_url": base_url,
        "timeout_s": 5,
        "max_retries": 0,
        "backoff_s": 0,
        **extra,
    }


def make_config(
    upstreams: list[dict[str, Any]],
    models: dict[str, Any],
    environ: dict[str, str] | None = None,
    **extra: Any,
) -> GatewayConfig:
    raw = {
        "upstreams": [{"name": "extractive", "kind": "extractive"}, *upstreams],
        "models": {
            "extractive-triage": {
                "targets": [{"upstream": "extractive", "model": "extractive-triage"}]
            },
            **models,
        },
        "key_cache_s": 0,
        **extra,
    }
    return parse_config(raw, "<test>", environ or {})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str, text: str = "Is this alert a true positive?", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_events(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event, in order."""
    for line in lines:
        if line.startswith("data: "):
            yield line[len("data: ") :]
