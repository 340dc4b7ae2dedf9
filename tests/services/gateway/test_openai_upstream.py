"""The OpenAI path against a real OpenAI-protocol server on loopback: JSON, SSE, tools."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from services.gateway.config import GatewayConfig
from services.gateway.keys import KeyStore
from tests.services.gateway.fake_openai import FakeOpenAI
from tests.services.gateway.gatewaytest import (
    Serve,
    bearer,
    chat,
    make_config,
    openai_upstream,
    sse_events,
)

Fake = tuple[FakeOpenAI, str]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _config(url: str) -> GatewayConfig:
    return make_config(
        [openai_upstream("vllm", url, api_key_env="TEST_VLLM_KEY")],
        {
            "llm": {
                "capabilities": {"tools": True},
                "targets": [
                    {"upstream": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"},
                    {"upstream": "extractive", "model": "extractive-triage", "tools": False},
                ],
            },
            "plain": {"targets": [{"upstream": "extractive", "model": "extractive-triage"}]},
        },
        environ={"TEST_VLLM_KEY": "sk-upstream-secret-123"},
    )


@pytest.fixture
def key(store: KeyStore) -> str:
    return store.create("client")[1]


def test_non_streaming_call_is_proxied_with_trace_and_upstream_key(
    serve: Serve, key: str, fake: Fake
) -> None:
    upstream, url = fake
    with serve(_config(url)) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", temperature=0.2, seed=7, response_format={"type": "json_object"}),
            headers={**bearer(key), "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
        )
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "llm"
    assert body["choices"][0]["message"]["content"] == "The host looks benign today."
    assert body["usage"]["completion_tokens"] == 7
    sent = upstream.calls[0]
    assert sent["body"]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert sent["body"]["temperature"] == 0.2
    assert sent["body"]["seed"] == 7  # parameters the gateway does not name pass through
    assert sent["body"]["response_format"] == {"type": "json_object"}
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret-123"
    upstream_trace = sent["headers"]["traceparent"].split("-")
    assert upstream_trace[1] == TRACE
    assert upstream_trace[2] != "00f067aa0ba902b7"  # the gateway's own span is the parent
    assert answer.headers["traceparent"] == sent["headers"]["traceparent"]


def test_a_trace_is_started_when_the_client_sends_none(serve: Serve, key: str, fake: Fake) -> None:
    upstream, url = fake
    with serve(_config(url)) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions", json=chat("llm"), headers=bearer(key)
        )
    version, trace_id, span_id, flags = answer.headers["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
    assert upstream.calls[0]["headers"]["traceparent"] == answer.headers["traceparent"]


def test_stream_is_proxied_chunk_by_chunk_before_the_upstream_finishes(
    serve: Serve, key: str, fake: Fake
) -> None:
    upstream, url = fake
    upstream.gate = threading.Event()
    with (
        serve(_config(url)) as gw,
        httpx.stream(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", stream=True),
            headers=bearer(key),
            timeout=20,
        ) as response,
    ):
        events = sse_events(response.iter_lines())
        first = json.loads(next(events))
        # The upstream is held after its first chunk: the client has it all the same.
        finished_before_first = upstream.stream_finished.is_set()
        upstream.gate.set()
        rest = list(events)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert not finished_before_first
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "The host "}
    assert first["model"] == "llm"
    assert rest[-1] == "[DONE]"
    chunks = [json.loads(e) for e in rest[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert pieces == ["looks ", "benign ", "today.", None]
    assert all("usage" not in c for c in chunks)  # the client did not ask for usage
    assert upstream.calls[0]["body"]["stream"] is True


def test_stream_usage_chunk_is_forwarded_when_the_client_asks(
    serve: Serve, key: str, fake: Fake
) -> None:
    _, url = fake
    with (
        serve(_config(url)) as gw,
        httpx.stream(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", stream=True, stream_options={"include_usage": True}),
            headers=bearer(key),
        ) as response,
    ):
        events = list(sse_events(response.iter_lines()))
    last = json.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 7


def test_extractive_stream_comes_in_several_chunks(serve: Serve, key: str, fake: Fake) -> None:
    _, url = fake
    with (
        serve(_config(url)) as gw,
        httpx.stream(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            json=chat("plain", stream=True),
            headers=bearer(key),
        ) as response,
    ):
        events = list(sse_events(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) >= 3
    assert isinstance(json.loads(content), dict)  # the extractive model answers JSON


def test_tools_pass_through_to_a_capable_target(serve: Serve, key: str, fake: Fake) -> None:
    upstream, url = fake
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    upstream.replies.append({"role": "assistant", "content": None, "tool_calls": [call]})
    with serve(_config(url)) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", tools=[WEATHER_TOOL], tool_choice="auto"),
            headers=bearer(key),
        )
    assert answer.status_code == 200
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [call]  # the client's tool: returned, not run
    assert upstream.calls[0]["body"]["tools"] == [WEATHER_TOOL]
    assert upstream.calls[0]["body"]["tool_choice"] == "auto"


def test_tools_never_reach_a_target_without_the_capability(
    serve: Serve, key: str, refused_url: str
) -> None:
    with serve(_config(refused_url)) as gw:
        needs_tools = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("llm", tools=[WEATHER_TOOL]),
            headers=bearer(key),
        )
        no_capable_target = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("plain", tools=[WEATHER_TOOL]),
            headers=bearer(key),
        )
        tools_off = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("plain", tools=[WEATHER_TOOL], tool_choice="none"),
            headers=bearer(key),
        )
    # vLLM is down and the extractive fallback cannot take tools: no target is left.
    assert needs_tools.status_code == 502
    assert "vllm: cannot connect" in needs_tools.json()["error"]["message"]
    assert no_capable_target.status_code == 400
    assert no_capable_target.json()["error"]["code"] == "tools_not_supported"
    assert tools_off.status_code == 200  # tool_choice none: the tools are stripped


def test_httpx_own_transport_proxies_json_and_streams_too(
    serve: Serve, key: str, fake: Fake
) -> None:
    upstream, url = fake
    config = make_config(
        [openai_upstream("u", url, transport="httpx")],
        {"m": {"targets": [{"upstream": "u", "model": "x"}]}},
    )
    with serve(config) as gw:
        answer = httpx.post(
            f"{gw.base_url}/v1/chat/completions", json=chat("m"), headers=bearer(key)
        )
        with httpx.stream(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            json=chat("m", stream=True),
            headers=bearer(key),
        ) as response:
            events = list(sse_events(response.iter_lines()))
    assert answer.json()["choices"][0]["message"]["content"] == "The host looks benign today."
    content = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
    )
    assert content == "The host looks benign today."
    assert len(upstream.calls) == 2
