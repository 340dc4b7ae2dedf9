"""HTTP ingest throughput: agents' batches through POST /ingest of the policy service to Kafka.

The service runs as its own process (uvicorn, one worker) on a fresh topic of the embedded broker;
the client posts pre-encoded batches of scenario events over keep-alive connections.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

from agents.scenarios import generate
from bench.common import Result, embedded_broker, write_section
from sentinel.kafka import TopicSpec, create_topics, free_port, offsets
from sentinel.kafka.clients import admin_client
from sentinel.settings import PROJECT_ROOT, Settings

TARGET = 5_000
ADMIN_KEY = "spk_bench-ingest-admin-key"


def _start_service(
    settings: Settings, topic: str, tmp: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ,
        SENTINEL_STATE_DIR=str(tmp),
        SENTINEL_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SENTINEL_POLICY_EVENTS_TOPIC=topic,
        SENTINEL_POLICY_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        SENTINEL_LOG_LEVEL="warning",
    )
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "services.policy.app:from_environment",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    log = (tmp / "service.log").open("wb")
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the policy service did not start; see {tmp / 'service.log'}")


def run(count: int, batch: int, clients: int) -> list[Result]:
    settings = Settings()
    events = list(generate("mixed", count, seed=17))
    bodies = [orjson.dumps({"events": events[i : i + batch]}) for i in range(0, len(events), batch)]
    with embedded_broker(settings), tempfile.TemporaryDirectory() as tmp:
        topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
        admin = admin_client(settings)
        create_topics(admin, [TopicSpec(topic, 6)])
        admin.close()
        proc, url = _start_service(settings, topic, Path(tmp))
        accepted = [0] * clients
        try:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
            with httpx.Client(base_url=url, headers=headers, timeout=120) as warm:
                warm.post("/ingest", content=b'{"events": []}').raise_for_status()

            def post(worker: int) -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                    for body in bodies[worker::clients]:
                        answer = client.post("/ingest", content=body)
                        answer.raise_for_status()
                        accepted[worker] += int(answer.json()["accepted"])

            started = time.perf_counter()
            threads = [threading.Thread(target=post, args=(w,)) for w in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        landed = sum(offsets.end_offsets(settings, topic).values())
    total = sum(accepted)
    assert total == count == landed, (total, count, landed)
    rate = count / elapsed
    return [
        Result(
            "ingest",
            f"POST /ingest, {batch:,} events per batch, {clients} client(s)",
            rate,
            "events/s",
            f">= {TARGET:,}/s",
            rate >= TARGET,
            f"{count:,} mixed events validated and acked by Kafka (acks=all) in {elapsed:.1f} s; "
            f"{landed:,} on the topic",
        )
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not update PERFORMANCE.md")
    args = parser.parse_args(argv)
    results = run(args.count, args.batch, args.clients)
    for r in results:
        print(r.row())
    if not args.no_write:
        write_section(
            "ingest",
            f"python -m bench.bench_ingest --count {args.count} --batch {args.batch} "
            f"--clients {args.clients}",
            results,
            "The policy service (one uvicorn process) and the client share the machine's cores "
            "with the embedded broker. Each batch is answered only after Kafka acked every "
            "valid event.",
        )
    return results


if __name__ == "__main__":
    main()
