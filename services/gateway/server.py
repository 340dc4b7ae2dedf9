"""The gateway in a background thread of this process: for tests, the demo and evaluations.

with serve_in_thread(config, settings) as gateway:
    httpx.post(f"{gateway.base_url}/v1/chat/completions", ...)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from sentinel.settings import Settings
from services.gateway.app import create_app
from services.gateway.config import GatewayConfig


@dataclass(frozen=True)
class GatewayHandle:
    base_url: str  # http://127.0.0.1:PORT, without /v1
    host: str
    port: int
    app: ASGIApp

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"


@contextmanager
def serve_in_thread(
    config: GatewayConfig,
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[GatewayHandle]:
    """The gateway on (host, port) (0 = a free port) until the block ends, then stopped cleanly."""
    with run_in_thread(create_app(config, settings), host, port, lifespan="on") as handle:
        yield handle


@contextmanager
def run_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: Literal["auto", "on", "off"] = "auto",
    start_timeout_s: float = 30.0,
) -> Iterator[GatewayHandle]:
    """Any ASGI app under uvicorn in a background thread; `lifespan="on"` makes a failed
    start-up an error instead of a server without one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan)
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the server did not start: {failure[0] if failure else 'exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {start_timeout_s} s")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    try:
        yield GatewayHandle(f"http://{url_host}:{bound}", host, bound, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
