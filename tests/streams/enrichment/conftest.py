"""A real HTTP reputation service on 127.0.0.1 whose behaviour each test sets, and feed helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest

TI_HEADER = "indicator,reputation,feed,tags,country,asn,first_seen"


@dataclass
class ReputationService:
    """`GET /{kind}/{key}` answers `records[(kind, key)]` or 404; `GET /feeds/{name}` serves
    `files[name]`. `fail_next` answers that many 500s first; `mode` 'error' always answers 500,
    'hang' holds every request `hang_s` seconds; `delay_s` slows every answer."""

    url: str = ""
    records: dict[tuple[str, str], Any] = field(default_factory=dict)
    statuses: dict[tuple[str, str], int] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    mode: str = "ok"
    fail_next: int = 0
    delay_s: float = 0.0
    hang_s: float = 2.0
    calls: int = 0
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def answer(self, path: str) -> tuple[int, bytes, str]:
        with self.lock:
            self.calls += 1
            self.paths.append(path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fail = self.fail_next > 0 or self.mode == "error"
            self.fail_next = max(0, self.fail_next - 1)
        try:
            if self.mode == "hang":
                self.released.wait(self.hang_s)
            elif self.delay_s:
                time.sleep(self.delay_s)
            if fail:
                return 500, b'{"error": "internal"}', "application/json"
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if len(parts) == 2 and parts[0] == "feeds" and parts[1] in self.files:
                body, content_type = self.files[parts[1]]
                return 200, body, content_type
            if len(parts) != 2:
                return 400, b'{"error": "expected /{kind}/{key}"}', "application/json"
            key = (parts[0], parts[1])
            if key in self.statuses:
                return self.statuses[key], b"{}", "application/json"
            if key in self.records:
                record = self.records[key]
                body = record if isinstance(record, bytes) else orjson.dumps(record)
                return 200, body, "application/json"
            return 404, b'{"error": "unknown"}', "application/json"
        finally:
            with self.lock:
                self.in_flight -= 1


def _handler(service: ReputationService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, content_type = service.answer(self.path)
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout under test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def service() -> Iterator[ReputationService]:
    svc = ReputationService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(svc))
    svc.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield svc
    svc.released.set()  # end hanging handlers now rather than after hang_s
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def write_feed(tmp_path: Path) -> Callable[[str, str], Path]:
    """`write_feed(name, text)` writes a feed file under the test's tmp dir and returns its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
