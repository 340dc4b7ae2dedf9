"""The official `openai` client works against the gateway unchanged (JSON, SSE, errors)."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from services.gateway.keys import KeyStore
from tests.services.gateway.gatewaytest import Serve, make_config


def test_openai_sdk_completes_streams_and_reads_errors(serve: Serve, store: KeyStore) -> None:
    _, key = store.create("sdk", models=["extractive-triage"])
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Triage: curl to 203.0.113.7 on h-000"}
    ]
    with serve(make_config([], {})) as gw:
        client = openai.OpenAI(base_url=gw.openai_base_url, api_key=key, max_retries=0)
        answer = client.chat.completions.create(model="extractive-triage", messages=messages)
        stream = client.chat.completions.create(
            model="extractive-triage",
            messages=messages,
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        models = [m.id for m in client.models.list()]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gw.openai_base_url, api_key="sgw-wrong", max_retries=0
            ).models.list()
    content = answer.choices[0].message.content
    assert content is not None and isinstance(json.loads(content), dict)
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert "".join(pieces) == content
    assert models == ["extractive-triage"]
