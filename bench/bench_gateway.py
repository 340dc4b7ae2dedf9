"""LLM gateway benchmark: the latency the gateway adds over calling its upstream directly.

Three processes on this machine: a fake OpenAI upstream (tests/services/gateway/fake_openai.py,
uvicorn), the gateway (`gateway serve`, request log and usage accounting on, logs at info), and
this load generator. The same chat completion is sent directly to the upstream and through the
gateway by 1, 16 and 64 concurrent clients; added latency is the gateway's percentile minus the
direct one. The client is a minimal keep-alive HTTP/1.1 client on asyncio streams, so its own
cost stays small and is the same on both paths. Max requests/s is the gateway at 64 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import psutil

from bench.common import Result, write_section
from sentinel.kafka import free_port
from sentinel.settings import PROJECT_ROOT

CONCURRENCY = (1, 16, 64)
KEY = "sgw-bench-key-0123456789abcdefghijklmnop"
TARGET_ADDED_P50_MS = 2.0
BODY = orjson.dumps(
    {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You triage security alerts. Answer in JSON."},
            {"role": "user", "content": "Alert: curl from www-data to 203.0.113.7 on h-000."},
        ],
        "max_tokens": 64,
    }
)
CONFIG = """
upstreams:
  - {{name: fake, kind: openai, base_url: "http://127.0.0.1:{port}/v1", max_retries: 0}}
models:
  bench:
    targets: [{{upstream: fake, model: fake-model}}]
"""


def _request(port: int, path: str, key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def _client(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = -1
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length < 0:
                raise RuntimeError(f"port {port} answered without Content-Length")
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status} from port {port}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _load(port: int, path: str, key: str | None, clients: int, seconds: float) -> dict:
    request = _request(port, path, key)
    # Warm-up: connections, imports, first-call caches.
    await asyncio.gather(
        *(_client(port, request, time.perf_counter() + 0.3, []) for _ in range(clients))
    )
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_client(port, request, until, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "mean": statistics.fmean(latencies) * 1000,
        "rps": len(latencies) / elapsed,
        "n": len(latencies),
    }


def _wait_http(port: int, path: str, timeout_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} within {timeout_s} s")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[psutil.Process]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out)
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        upstream_port, gateway_port = free_port(), free_port()
        config = Path(tmp) / "gateway.yaml"
        config.write_text(CONFIG.format(port=upstream_port))
        env = {
            **os.environ,
            "SENTINEL_STATE_DIR": str(Path(tmp) / "state"),
            "SENTINEL_GATEWAY_API_KEY": KEY,
            "SENTINEL_LOG_FORMAT": "json",
            "SENTINEL_LOG_LEVEL": "info",
        }
        fake = [sys.executable, "-m", "tests.services.gateway.fake_openai"]
        gateway = [sys.executable, "-c", "from services.gateway.cli import app; app()", "serve"]
        with (
            _process([*fake, "--port", str(upstream_port)], env, Path(tmp) / "upstream.log"),
            _process(
                [*gateway, "--config", str(config), "--port", str(gateway_port)],
                env,
                Path(tmp) / "gateway.log",
            ) as gateway_process,
        ):
            _wait_http(upstream_port, "/v1/models")
            _wait_http(gateway_port, "/health")
            for clients in CONCURRENCY:
                direct = asyncio.run(
                    _load(upstream_port, "/v1/chat/completions", None, clients, args.seconds)
                )
                cpu_before = sum(gateway_process.cpu_times()[:2])
                via = asyncio.run(
                    _load(gateway_port, "/v1/chat/completions", KEY, clients, args.seconds)
                )
                # Warm-up requests are not in via["n"]: count them out by their share of time.
                cpu = sum(gateway_process.cpu_times()[:2]) - cpu_before
                cpu_ms = 1000 * cpu * (args.seconds / (args.seconds + 0.3)) / via["n"]
                added_p50 = via["p50"] - direct["p50"]
                added_p99 = via["p99"] - direct["p99"]
                print(f"{clients} clients: direct {direct}, via gateway {via}", flush=True)
                results.append(
                    Result(
                        "gateway",
                        f"added p50 latency, {clients} client{'s' if clients > 1 else ''}",
                        added_p50,
                        "ms",
                        target=f"<= {TARGET_ADDED_P50_MS:g} ms" if clients == 1 else "",
                        met=added_p50 <= TARGET_ADDED_P50_MS if clients == 1 else None,
                        note=(
                            f"p50 direct {direct['p50']:.2f} ms, via gateway {via['p50']:.2f} ms; "
                            f"{via['n']:,} requests"
                        ),
                    )
                )
                results.append(
                    Result(
                        "gateway",
                        f"added p99 latency, {clients} client{'s' if clients > 1 else ''}",
                        added_p99,
                        "ms",
                        note=f"p99 direct {direct['p99']:.2f} ms, via gateway {via['p99']:.2f} ms",
                    )
                )
                results.append(
                    Result(
                        "gateway",
                        f"gateway CPU per request, {clients} client{'s' if clients > 1 else ''}",
                        cpu_ms,
                        "ms",
                        note="user + system time of the gateway process (other load on the "
                        "machine does not count)",
                    )
                )
                if clients == max(CONCURRENCY):
                    results.append(
                        Result(
                            "gateway",
                            f"max requests/s through the gateway ({clients} clients)",
                            via["rps"],
                            "requests/s",
                            note=f"the upstream alone: {direct['rps']:,.0f} requests/s",
                        )
                    )
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "gateway",
            f"python -m bench.bench_gateway --seconds {args.seconds:g}",
            results,
            "Upstream, gateway and load generator are three processes on the same 2 cores, so "
            "at 16 and 64 clients the added latency is mostly the gateway's CPU time competing "
            "with the upstream's and the client's (queueing), not a per-request delay.",
        )
    return results


if __name__ == "__main__":
    main()
