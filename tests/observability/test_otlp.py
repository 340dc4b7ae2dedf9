"""SENTINEL_OTEL_EXPORTER=otlp: spans go over OTLP/HTTP (protobuf) to a collector; here a
receiver on loopback that decodes each export request with the OTLP protobuf definitions."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sentinel.kafka import EVENTS
from sentinel.settings import PROJECT_ROOT, Settings
from sentinel.tracing import TracingError, flush, tracer


class Collector:
    """Spans received at POST /v1/traces: (service.name, span name, attributes)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, Any]]] = []
        self.content_types: set[str] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.content_types.add(self.headers["Content-Type"])
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value for a in span.attributes}
                            collector.spans.append((service, span.name, attrs))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, name: str, timeout_s: float = 30) -> list[tuple[str, str, dict]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s[1] == name]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no span {name!r} received; got {[s[1] for s in self.spans]}")


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


def test_spans_reach_an_otlp_collector_and_no_file_is_written(
    tmp_path: Path, collector: Collector
) -> None:
    settings = Settings(state_dir=tmp_path, otel_exporter="otlp", otel_endpoint=collector.endpoint)
    with tracer(settings, "sentinel-otlp-test").start_as_current_span("unit") as span:
        span.set_attribute("rule.id", "core.reverse_shell")
    flush()
    ((service, _, attrs),) = collector.wait_for("unit")
    assert service == "sentinel-otlp-test"
    assert attrs["rule.id"].string_value == "core.reverse_shell"
    assert collector.content_types == {"application/x-protobuf"}
    assert not any(tmp_path.rglob("*.jsonl"))


@pytest.mark.kafka
def test_a_replay_process_exports_its_batch_spans_over_otlp(
    tmp_path: Path, kafka: Settings, collector: Collector
) -> None:
    env = {
        **os.environ,
        "SENTINEL_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "SENTINEL_STATE_DIR": str(tmp_path),
        "SENTINEL_OTEL_EXPORTER": "otlp",
        "SENTINEL_OTEL_ENDPOINT": collector.endpoint,
    }
    done = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "replay", "--count", "300", "--quiet"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    batches = collector.wait_for("replay.batch")
    assert {service for service, _, _ in batches} == {"sentinel-replay"}
    assert sum(a["messaging.batch.message_count"].int_value for _, _, a in batches) == 300
    assert {a["messaging.destination.name"].string_value for _, _, a in batches} == {EVENTS}
    assert not any(tmp_path.rglob("*.jsonl"))


def test_without_the_exporter_package_the_error_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    settings = Settings(state_dir=tmp_path, otel_exporter="otlp", otel_service_name="no-otlp")
    with pytest.raises(TracingError, match="opentelemetry-exporter-otlp-proto-http"):
        tracer(settings, "sentinel-test")
