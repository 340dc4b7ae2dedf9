"""Gateway test fixtures: settings in a temporary state folder, fake OpenAI upstreams on loopback
(real HTTP), configurations over them, and the gateway itself under uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from sentinel.settings import Settings
from services.gateway.config import GatewayConfig
from services.gateway.keys import KeyStore
from services.gateway.server import GatewayHandle, run_in_thread, serve_in_thread
from tests.services.gateway.fake_openai import FakeOpenAI
from tests.services.gateway.gatewaytest import Serve


@pytest.fixture
def gw_settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", lake_dir=tmp_path / "lake", gateway_api_key=None)


@pytest.fixture
def store(gw_settings: Settings) -> Iterator[KeyStore]:
    keys = KeyStore(gw_settings.gateway_database_url)
    yield keys
    keys.close()


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    """One fake OpenAI server: (the fake, its base URL with /v1)."""
    upstream = FakeOpenAI()
    with run_in_thread(upstream) as handle:
        yield upstream, handle.openai_base_url
    if upstream.gate is not None:
        upstream.gate.set()


@pytest.fixture
def fake_backup() -> Iterator[tuple[FakeOpenAI, str]]:
    upstream = FakeOpenAI(pieces=("backup ", "answer"))
    with run_in_thread(upstream) as handle:
        yield upstream, handle.openai_base_url


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def serve(gw_settings: Settings) -> Serve:
    """`with serve(config) as gateway:` the gateway under uvicorn on a free loopback port."""

    def start(config: GatewayConfig) -> AbstractContextManager[GatewayHandle]:
        return serve_in_thread(config, gw_settings)

    return start
