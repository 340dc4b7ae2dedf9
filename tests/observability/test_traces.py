"""One attack event from replay to its alert, its triage and the gateway: a single trace with a
span from each hop, written by the file exporter of each real process, and `sentinel trace show`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from sentinel.cli import app as cli
from sentinel.kafka import ALERTS, ALERTS_TRIAGED, EVENTS
from sentinel.settings import Settings
from sentinel.tracing import flush, read_spans
from services.gateway.config import load_config
from services.gateway.server import GatewayHandle, serve_in_thread
from streams.triage.triage import wants_triage
from tests.streams.conftest import StreamEnv

pytestmark = pytest.mark.kafka

KEY = "sk-test-traces-0123456789abcdef"
FLUSH_S = "0.3"


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    return tmp_path / "traces"


@pytest.fixture
def gateway(tmp_path: Path, traces: Path) -> Iterator[GatewayHandle]:
    settings = Settings(
        state_dir=tmp_path / "gateway-state",
        gateway_api_key=KEY,
        traces_dir=traces,
        otel_flush_interval_s=float(FLUSH_S),
    )
    with serve_in_thread(load_config(settings), settings) as handle:
        yield handle


def _triaged(env: StreamEnv, wanted: set[str], timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {(v := orjson.loads(r.value))["alert_id"]: v for r in env.read_all(ALERTS_TRIAGED)}
        if wanted <= found.keys():
            return found
        for worker in env.workers:
            worker.check_alive()
        time.sleep(1)
    raise AssertionError("the alerts were never triaged")


def _trace_of(traces: Path, alert_id: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The alert's path through its trace, [replay, detect, triage, gateway], once every hop
    has flushed its spans."""
    deadline = time.monotonic() + timeout_s
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        flush()  # the replay's and the gateway's spans, from this process
        spans = list(read_spans(traces))
        by_id = {s["span_id"]: s for s in spans}
        for triage in spans:
            if triage["name"] != "triage.alert" or triage["attributes"].get("alert.id") != alert_id:
                continue
            server = [s for s in spans if s["parent_span_id"] == triage["span_id"]]
            detect = by_id.get(triage["parent_span_id"])
            replay = by_id.get(detect["parent_span_id"]) if detect else None
            if server and detect and replay:
                return [replay, detect, triage, *server]
        time.sleep(0.5)
    raise AssertionError(f"no complete trace for alert {alert_id} among {len(spans)} spans")


def test_one_attack_event_is_one_trace_from_replay_through_triage_to_the_gateway(
    stream_env: StreamEnv, gateway: GatewayHandle, traces: Path
) -> None:
    stream_env.env.update(
        SENTINEL_TRIAGE_ENABLED="true",
        SENTINEL_GATEWAY_URL=gateway.base_url,
        SENTINEL_GATEWAY_API_KEY=KEY,
        SENTINEL_TRACES_DIR=str(traces),
        SENTINEL_OTEL_FLUSH_INTERVAL_S=FLUSH_S,
    )
    stream_env.worker().start()
    settings = stream_env.settings.model_copy(update={"traces_dir": traces})
    events = list(generate("mixed", 4_000, seed=5))
    assert replay_to_kafka(events, settings, EVENTS).errors == 0
    stream_env.wait_committed(len(events))

    alert_records = {r.key.decode(): r for r in stream_env.read_all(ALERTS)}
    alerts = {k: orjson.loads(r.value) for k, r in alert_records.items()}
    wanted = {i for i, a in alerts.items() if wants_triage(a, "high")}
    assert wanted, "the mixed scenario raises high-severity alerts"
    triaged = _triaged(stream_env, wanted)
    alert_id = sorted(i for i in wanted if triaged[i]["status"] == "triaged")[0]
    alert = alerts[alert_id]

    path = _trace_of(traces, alert_id)
    replay, detect, triage, server = path
    # One trace, one hop after the other: replay → detection → triage → gateway.
    assert len(path) == 4, "one gateway call for the alert"
    assert len({s["trace_id"] for s in path}) == 1
    assert replay["name"] == "replay.batch" and replay["service"] == "sentinel-replay"
    assert replay["parent_span_id"] is None, "the replay's batch starts the trace"
    assert detect["name"] == "detect.alert" and detect["service"] == "sentinel-worker"
    assert triage["service"] == "sentinel-worker"
    assert server["name"] == "POST /v1/chat/completions" and server["kind"] == "SERVER"
    assert server["service"] == "sentinel-gateway"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["gateway.model"] == "extractive-triage"
    # The alert names its source event, and the alert record on Kafka carries the trace.
    assert detect["attributes"]["alert.id"] == alert_id
    assert detect["attributes"]["rule.id"] == alert["rule"]["id"]
    assert detect["attributes"]["event.id"] in alert["event_ids"]
    assert triage["attributes"]["triage.status"] == "triaged"
    header = dict(alert_records[alert_id].headers)["traceparent"].decode()
    assert header.split("-")[1] == detect["trace_id"]
    # The batch span that raised it is linked, and it links to the records' producer spans.
    (link,) = detect["links"]
    batches = [s for s in read_spans(traces) if s["span_id"] == link["span_id"]]
    assert [b["name"] for b in batches] == ["detect.batch"]
    assert batches[0]["links"], "a batch links to the spans that produced its records"
    assert batches[0]["attributes"]["messaging.batch.message_count"] >= 1

    shown = CliRunner().invoke(cli, ["trace", "show", alert_id, "--traces-dir", str(traces)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert f"trace {detect['trace_id']}" in shown.output

    def line_of(text: str, after: int = -1) -> int:
        return next(i for i, line in enumerate(lines) if i > after and text in line)

    at_replay = line_of("replay.batch [sentinel-replay]")
    at_detect = line_of(f"alert.id={alert_id}", at_replay)
    at_triage = line_of(f"alert.id={alert_id}", at_detect)
    at_gateway = line_of("POST /v1/chat/completions [sentinel-gateway]", at_triage)
    assert "detect.alert [sentinel-worker]" in lines[at_detect], shown.output
    assert "triage.alert [sentinel-worker]" in lines[at_triage], shown.output
    assert "linked: detect.batch [sentinel-worker]" in lines[at_detect + 1], shown.output
    assert " ms " in lines[at_gateway], "each span shows its duration"
    # Indentation grows with each hop: the tree nests replay > detect > triage > gateway.
    tree = [at_replay, at_detect, at_triage, at_gateway]
    depth = [len(lines[i]) - len(lines[i].lstrip("│ ├└─")) for i in tree]
    assert depth == sorted(depth) and len(set(depth)) == 4, shown.output

    unknown = CliRunner().invoke(cli, ["trace", "show", "nope", "--traces-dir", str(traces)])
    assert unknown.exit_code == 1
    assert "no span with alert.id=nope" in unknown.output


def test_a_span_file_rotates_at_its_size_cap_and_both_parts_are_read(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from sentinel.tracing import JsonLinesExporter

    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(tmp_path / "svc-1.jsonl", max_bytes=2_000))
    )
    spans = provider.get_tracer("test")
    for i in range(20):
        spans.start_span("unit", attributes={"alert.id": f"a{i}"}).end()
    provider.shutdown()
    assert (tmp_path / "svc-1.jsonl.1").stat().st_size >= 2_000
    found = [s["attributes"]["alert.id"] for s in read_spans(tmp_path)]
    assert len(found) == len(set(found)) and found[-1] == "a19"
    assert len(found) < 20, "the part before the last rotation is gone"
