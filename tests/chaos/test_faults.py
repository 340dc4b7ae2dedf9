"""The fault proxy on real loopback sockets: forwarding, reset, blackhole, slow, restore."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from sentinel.chaos.faults import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    with FaultProxy(echo, name="test") as p:
        yield p


def _roundtrip(port: int, payload: bytes, timeout_s: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_forwards_bytes_both_ways_and_counts_them(proxy: FaultProxy) -> None:
    payload = b"x" * 200_000
    assert _roundtrip(proxy.port, payload) == payload
    assert proxy.stats["bytes_up"] == len(payload) and proxy.stats["bytes_down"] == len(payload)


def test_reset_aborts_open_connections_and_refuses_new_ones_until_restored(
    proxy: FaultProxy,
) -> None:
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    proxy.cut("reset")
    with pytest.raises(OSError):  # reset, or closed before the answer
        conn.sendall(b"again")
        if not conn.recv(5):
            raise ConnectionResetError("closed")
    conn.close()
    with pytest.raises(OSError):
        got = _roundtrip(proxy.port, b"new")
        if got != b"new":
            raise ConnectionResetError("closed")
    assert proxy.stats["reset"] >= 1 and proxy.stats["aborted"] >= 1
    proxy.restore()
    assert _roundtrip(proxy.port, b"back") == b"back"


def test_blackhole_swallows_everything_and_restore_drops_the_held_connections(
    proxy: FaultProxy,
) -> None:
    proxy.cut("blackhole")
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
    conn.sendall(b"lost")
    with pytest.raises(TimeoutError):
        conn.recv(4)  # accepted, but nothing comes back: a partition, not a refusal
    proxy.restore()
    time.sleep(0.1)
    assert conn.recv(4) == b""  # the held connection was dropped; the client must reconnect
    conn.close()
    assert proxy.stats["held"] == 1
    assert _roundtrip(proxy.port, b"back") == b"back"


def test_slow_delays_each_answer_and_zero_restores_the_speed(proxy: FaultProxy) -> None:
    proxy.slow(0.4)
    started = time.monotonic()
    assert _roundtrip(proxy.port, b"slow") == b"slow"
    slowed = time.monotonic() - started
    proxy.slow(0.0)
    started = time.monotonic()
    assert _roundtrip(proxy.port, b"fast") == b"fast"
    assert slowed >= 0.4 > time.monotonic() - started


def test_a_port_in_use_is_a_clear_error(proxy: FaultProxy, echo: int) -> None:
    with pytest.raises(OSError, match="could not listen on port"):
        FaultProxy(echo, port=proxy.port, name="second").start()
