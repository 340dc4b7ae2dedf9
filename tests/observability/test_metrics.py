"""/metrics of a real worker, agent, gateway and policy service say what they did; the Grafana
dashboards follow Grafana's JSON model, and they and the alert rules name only metrics that those
processes export (collected by scraping them: promtool is not available here)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agents.scenarios import generate
from sentinel.kafka import EVENTS, free_port
from sentinel.metrics import StateCollector
from sentinel.settings import PROJECT_ROOT, Settings
from sentinel.tracing import flush, read_spans
from services.gateway.config import load_config
from services.gateway.server import GatewayHandle, serve_in_thread
from tests.agents.agentproc import AgentProcess
from tests.services.policy.policytest import policy_settings, serve
from tests.streams.conftest import StreamEnv

KEY = "sk-test-metrics-0123456789abcdef"
AGENT_EVENTS = 3000
DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana").glob("*.json"))
ALERT_RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
SCHEMA = Path(__file__).with_name("grafana-dashboard.schema.json")
# Series Prometheus makes itself for every target.
BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}

Samples = dict[str, list[tuple[dict[str, str], float]]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, ranges left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )  # grouping labels
    text = re.sub(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(", "(", text)  # function calls
    names = set(re.findall(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return names - PROMQL_WORDS


def test_metric_names_of_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(policy_request_duration_seconds_bucket"
        '{route="/ingest",status=~"5.."}[$__rate_interval]))) / clamp_min(up{job="x"}, 1e-9) '
        "and avg_over_time(max(sentinel_eval_gate_passed)[7d:1h]) > 2 * 3600"
    )
    assert metric_names(expr) == {
        "policy_request_duration_seconds_bucket",
        "up",
        "sentinel_eval_gate_passed",
    }


def scrape(url: str) -> tuple[set[str], Samples]:
    """(every name the exposition defines, the samples by name) of one /metrics answer."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        for sample in family.samples:
            names.add(sample.name)
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items())
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHandle]:
    settings = Settings(state_dir=tmp_path / "gateway-state", gateway_api_key=KEY)
    with serve_in_thread(load_config(settings), settings) as handle:
        yield handle


def _agent(env: StreamEnv, tmp: Path, port: int, traces: Path) -> AgentProcess:
    tmp.mkdir()
    config: dict[str, Any] = {
        "host": {"id": "metrics-agent"},
        "metrics_port": port,
        "stats_interval_s": 1,
        "rules": {"follow": False},
        "sensors": {"scenario": {"scenario": "mixed", "rate": 3000, "count": AGENT_EVENTS}},
    }
    env_vars = {"SENTINEL_TRACES_DIR": str(traces), "SENTINEL_OTEL_FLUSH_INTERVAL_S": "0.3"}
    return AgentProcess(env.settings, tmp, config, env_vars)


@pytest.mark.kafka
def test_every_long_running_process_serves_what_it_counted_and_the_dashboards_use_only_that(
    stream_env: StreamEnv, gateway: GatewayHandle, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    stream_env.env.update(
        SENTINEL_TRIAGE_ENABLED="true",
        SENTINEL_GATEWAY_URL=gateway.base_url,
        SENTINEL_GATEWAY_API_KEY=KEY,
        SENTINEL_TRACES_DIR=str(traces),
        SENTINEL_OTEL_FLUSH_INTERVAL_S="0.3",
    )
    worker = stream_env.worker().start()
    policy_config = policy_settings(
        tmp_path / "policy-state",
        stream_env.settings,
        policy_follow_heartbeats=False,
        traces_dir=traces,
    )
    agent_port = free_port()
    with serve(policy_config) as policy:
        agent = _agent(stream_env, tmp_path / "agent", agent_port, traces).start()
        try:
            agent.wait_stats(lambda s: s["produced"] >= AGENT_EVENTS, timeout_s=90)
            agent_names, agent_samples = scrape(f"http://127.0.0.1:{agent_port}/metrics")
        finally:
            assert agent.stop() == 0
        key = policy.user("edge-1", "agent")
        events = [*generate("baseline", 2, seed=1), {"schema": "sentinel.event/1", "id": "x"}]
        with policy.client(key) as client:
            answer = client.post("/ingest", content=orjson.dumps({"events": events}))
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 2
        policy_names, policy_samples = scrape(f"{policy.url}/metrics")
    stream_env.wait_committed(AGENT_EVENTS + 2)
    worker.wait(lambda h: h["triage"]["triaged"] >= 1 and h["events"] >= AGENT_EVENTS + 2)
    worker_names, worker_samples = scrape(f"http://127.0.0.1:{worker.port}/metrics")
    gateway_names, gateway_samples = scrape(f"{gateway.base_url}/metrics")

    # The agent: what it shipped, per sensor, its (empty) spool.
    assert value(agent_samples, "sentinel_agent_events_produced_total") >= AGENT_EVENTS
    assert value(agent_samples, "sentinel_agent_events_dropped_total") == 0
    assert value(agent_samples, "sentinel_agent_connected") == 1
    generated = value(
        agent_samples, "sentinel_agent_sensor_events_total", sensor="scenario", counter="generated"
    )
    assert generated >= AGENT_EVENTS
    assert "sentinel_agent_spool_pending_records" in agent_samples
    assert "sentinel_agent_spool_bytes" in agent_samples

    # The policy service: the ingest request, its events, by outcome.
    assert value(policy_samples, "policy_ingest_events_total", outcome="accepted") == 2
    assert value(policy_samples, "policy_ingest_events_total", outcome="rejected") == 1
    assert value(policy_samples, "policy_requests_total", route="/ingest", status="200") == 1
    assert value(policy_samples, "policy_requests_total", route="/users", status="201") == 1
    assert value(policy_samples, "policy_request_duration_seconds_count", route="/ingest") == 1

    # The worker: every event in, alerts out, per-rule stats, triage, lag per partition.
    total = AGENT_EVENTS + 2
    assert value(worker_samples, "sentinel_detection_events_total") == total
    assert value(worker_samples, "sentinel_detection_valid_events_total") == total
    assert value(worker_samples, "sentinel_detection_alerts_total") >= 1
    assert value(worker_samples, "sentinel_detection_batch_seconds_count") >= 1
    assert value(worker_samples, "sentinel_alert_latency_seconds_count") >= 1
    rules = {labels["rule"] for labels, _ in worker_samples["sentinel_rule_evaluations_total"]}
    assert len(rules) == value(worker_samples, "sentinel_rules_loaded") > 0
    assert value(worker_samples, "sentinel_rule_evaluations_total") >= total
    assert value(worker_samples, "sentinel_rule_matches_total") >= 1
    native = value(worker_samples, "sentinel_rule_native_evaluations_total")
    assert 0 < native <= value(worker_samples, "sentinel_rule_evaluations_total")
    triaged = value(worker_samples, "sentinel_triage_triaged_total")
    assert triaged >= 1 and value(worker_samples, "sentinel_triage_failed_total") == 0
    assert value(worker_samples, "sentinel_triage_latency_seconds_count", status="triaged") >= 1
    lag = {
        labels["partition"]: v
        for labels, v in worker_samples["sentinel_consumer_lag"]
        if labels["group"] == stream_env.settings.streams_detection_group
    }
    assert len(lag) == stream_env.settings.kafka_partitions
    assert all(v == 0 for v in lag.values()), "every event is processed"
    assert {labels["topic"] for labels, _ in worker_samples["sentinel_consumer_lag"]} >= {EVENTS}
    assert "process_cpu_seconds_total" in worker_samples

    # The gateway: the triage calls.
    assert value(gateway_samples, "gateway_requests_total", status="200") >= triaged
    duration = "gateway_request_duration_seconds_count"
    assert value(gateway_samples, duration, path="/v1/chat/completions", status="200") >= triaged

    # The agent's chunks and the policy's ingest are spans; detection links its batches to them.
    flush()  # the policy service's and the gateway's spans, from this process
    spans = list(read_spans(traces))
    ships = {s["span_id"] for s in spans if s["name"] == "agent.ship"}
    assert ships and all(s["service"] == "sentinel-agent" for s in spans if s["span_id"] in ships)
    linked = {link["span_id"] for s in spans if s["name"] == "detect.batch" for link in s["links"]}
    assert ships & linked, "detection batches link to the agent chunks they read"
    ingest = [s for s in spans if s["service"] == "sentinel-policy" and "/ingest" in s["name"]]
    assert ingest and ingest[0]["attributes"]["http.route"] == "/ingest"

    exported = BUILTIN | worker_names | agent_names | gateway_names | policy_names
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                unknown = metric_names(target["expr"]) - exported
                assert not unknown, f"{path.name} panel '{panel['title']}' names {unknown}"
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - exported
            assert not unknown, f"{ALERT_RULES.name} alert {rule['alert']} names {unknown}"


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_each_dashboard_follows_grafanas_json_model(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(dashboard)
    panels = list(_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"'{panel['title']}' is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"'{panel['title']}' overlaps '{cells[(x, y)]}'"
                cells[(x, y)] = panel["title"]
        for target in panel.get("targets", []):
            assert metric_names(target["expr"]), f"'{panel['title']}' selects no metric"


def test_the_schema_rejects_what_grafana_would_not_load() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    good = json.loads(DASHBOARDS[0].read_text())
    for broken in (
        {k: v for k, v in good.items() if k != "schemaVersion"},
        {**good, "schemaVersion": 27},
        {**good, "panels": [{**good["panels"][1], "gridPos": {"x": 0, "y": 0, "w": 25, "h": 4}}]},
        {**good, "panels": [{**good["panels"][1], "targets": [{"refId": "A"}]}]},
    ):
        assert not validator.is_valid(broken)


def test_the_scrape_config_covers_every_long_running_process() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"sentinel-worker", "sentinel-agent", "sentinel-gateway", "sentinel-policy"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    defaults = Settings()
    targets = {name: job["static_configs"][0]["targets"][0] for name, job in jobs.items()}
    assert targets["sentinel-worker"].endswith(f":{defaults.streams_web_port}")
    assert targets["sentinel-gateway"].endswith(f":{defaults.gateway_port}")
    assert targets["sentinel-policy"].endswith(f":{defaults.policy_port}")
    assert config["rule_files"] == ["alerts.yml"]


def test_lake_freshness_and_the_eval_gate_are_read_from_the_state_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    hour = settings.lake_root / "bronze" / EVENTS / "date=2026-12-03" / "hour=07"
    hour.mkdir(parents=True)
    (hour.parent.parent / "_ledger").mkdir()
    ((hour.parent.parent / "_ledger") / "0.json").write_text("{}")
    report = settings.evals_root / "run-1" / "report.json"
    report.parent.mkdir(parents=True)
    gate = {"passed": False, "variants": {"a": {"passed": True}, "b": {"passed": False}}}
    report.write_text(json.dumps({"gate": gate}))
    found = {
        sample.name: sample
        for family in StateCollector(settings).collect()
        for sample in family.samples
    }
    landed = found["sentinel_lake_last_landing_timestamp_seconds"]
    assert landed.labels == {"topic": EVENTS} and abs(landed.value - time.time()) < 600
    # The newest event-time hour is 07:00-08:00 on 2026-12-03.
    assert found["sentinel_lake_newest_data_timestamp_seconds"].value == 1796281200.0 + 3600
    assert found["sentinel_eval_gate_passed"].value == 0.0
    assert found["sentinel_eval_variants_passed_ratio"].value == 0.5
