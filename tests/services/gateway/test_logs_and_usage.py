"""The request log (redacted, one line per request), usage accounting and keys at rest."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sentinel.settings import Settings
from services.gateway.keys import KeyStore
from tests.services.gateway.fake_openai import FakeOpenAI
from tests.services.gateway.gatewaytest import Serve, bearer, chat, make_config, openai_upstream

SECRET_TEXT = (
    "my password: hunter2 and the token sk-live-4f9a8b7c6d5e4f3a, key AKIAABCDEFGHIJKLMNOP"
)


def _log_lines(settings: Settings) -> list[dict[str, object]]:
    path = settings.gateway_root / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_request_log_has_one_redacted_line_per_request(
    serve: Serve, store: KeyStore, gw_settings: Settings, fake: tuple[FakeOpenAI, str]
) -> None:
    upstream, url = fake
    upstream.pieces = ("echo: ", "sk-leaked-in-the-answer-123456")
    config = make_config(
        [openai_upstream("u", url)],
        {"m": {"targets": [{"upstream": "u", "model": "x"}]}},
        redaction={"fields": ["password"], "paths": ["messages.*.name"]},
    )
    key, plain = store.create("logged")
    with serve(config) as gw:
        httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json={
                "model": "m",
                "messages": [{"role": "user", "content": SECRET_TEXT, "name": "alice"}],
                "password": "top-secret-field",
            },
            headers={**bearer(plain), "X-Sentinel-Rule": "core.r1"},
        )
        httpx.get(f"{gw.base_url}/v1/models", headers=bearer(plain))
        httpx.get(f"{gw.base_url}/v1/models")  # 401
    text = (gw_settings.gateway_root / "requests.jsonl").read_text()
    for secret in (
        plain,
        "hunter2",
        "sk-live-4f9a8b7c6d5e4f3a",
        "AKIAABCDEFGHIJKLMNOP",
        "top-secret-field",
        "alice",
        "sk-leaked-in-the-answer",
    ):
        assert secret not in text
    lines = _log_lines(gw_settings)
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/chat/completions", 200),
        ("/v1/models", 200),
        ("/v1/models", 401),
    ]
    chat_line = lines[0]
    assert chat_line["key"] == "logged"
    assert chat_line["key_prefix"] == key.prefix
    assert chat_line["model"] == "m"
    assert chat_line["upstream"] == "u"
    assert chat_line["rule"] == "core.r1"
    assert chat_line["tokens"] == {"prompt": 9, "completion": 7}
    assert len(str(chat_line["trace_id"])) == 32
    request = chat_line["request"]
    assert isinstance(request, dict)
    assert request["headers"]["authorization"] == "[REDACTED]"
    assert request["body"]["messages"][0]["content"].startswith("my [REDACTED] and the token")
    assert request["body"]["password"] == "[REDACTED]"
    assert "echo: [REDACTED]" in json.dumps(chat_line["response"])


def test_usage_is_counted_per_key_model_and_rule(serve: Serve, store: KeyStore) -> None:
    config = make_config([], {})
    _, triage = store.create("triage")
    _, evals = store.create("evals")
    with serve(config) as gw:
        for key, rule in [(triage, "core.r1"), (triage, "core.r1"), (triage, "core.r2")]:
            answer = httpx.post(
                f"{gw.base_url}/v1/chat/completions",
                json=chat("extractive-triage"),
                headers={**bearer(key), "X-Sentinel-Rule": rule},
            )
            assert answer.status_code == 200
        httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("extractive-triage"),
            headers=bearer(evals),
        )
        tokens = answer.json()["usage"]
    # Usage is flushed every second and on shutdown.
    rows = {(r.key, r.model, r.rule): r for r in store.usage()}
    assert sorted(rows) == [
        ("evals", "extractive-triage", ""),
        ("triage", "extractive-triage", "core.r1"),
        ("triage", "extractive-triage", "core.r2"),
    ]
    r1 = rows[("triage", "extractive-triage", "core.r1")]
    assert r1.requests == 2
    assert r1.prompt_tokens == 2 * tokens["prompt_tokens"]
    assert r1.completion_tokens == 2 * tokens["completion_tokens"]
    assert rows[("evals", "extractive-triage", "")].requests == 1


def test_keys_are_stored_only_as_hashes(store: KeyStore, gw_settings: Settings) -> None:
    key, plain = store.create("at-rest", models=["extractive-triage"], rpm=10)
    store.close()
    database = Path(str(make_url(gw_settings.gateway_database_url).database))
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert plain.encode() not in raw
    with sa.create_engine(gw_settings.gateway_database_url).connect() as con:
        row = con.execute(sa.text("SELECT key_hash, prefix FROM gateway_keys")).one()
    assert len(row.key_hash) == 64
    assert row.prefix == plain[:12] == key.prefix
    assert store.find(plain) == key
