"""Keys and quotas over real HTTP: 401, 403, the models a key sees, 429 with Retry-After."""

from __future__ import annotations

import httpx

from sentinel.settings import Settings
from services.gateway.keys import KeyStore
from services.gateway.server import serve_in_thread
from tests.services.gateway.gatewaytest import Serve, bearer, chat, make_config

CONFIG = make_config(
    [],
    {"other-model": {"targets": [{"upstream": "extractive", "model": "extractive-triage"}]}},
)


def test_request_without_a_key_is_401_with_an_openai_error(serve: Serve) -> None:
    with serve(CONFIG) as gw:
        answer = httpx.post(f"{gw.base_url}/v1/chat/completions", json=chat("extractive-triage"))
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["type"] == "authentication_error"
    assert "Authorization: Bearer" in error["message"]


def test_unknown_and_revoked_keys_are_401(serve: Serve, store: KeyStore) -> None:
    key, plain = store.create("revoked-soon")
    with serve(CONFIG) as gw:
        unknown = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("extractive-triage"),
            headers=bearer("sgw-not-a-key-of-this-gateway-000000"),
        )
        store.revoke(key.name)
        revoked = httpx.get(f"{gw.base_url}/v1/models", headers=bearer(plain))
    assert unknown.status_code == 401
    assert "unknown API key" in unknown.json()["error"]["message"]
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]["message"]


def test_model_the_key_may_not_use_is_403_and_models_lists_only_allowed(
    serve: Serve, store: KeyStore
) -> None:
    _, plain = store.create("triage-only", models=["extractive-triage"])
    with serve(CONFIG) as gw:
        denied = httpx.post(
            f"{gw.base_url}/v1/chat/completions", json=chat("other-model"), headers=bearer(plain)
        )
        models = httpx.get(f"{gw.base_url}/v1/models", headers=bearer(plain)).json()
        missing = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("no-such-model"),
            headers=bearer(store.create("all")[1]),
        )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "model_not_allowed"
    assert [m["id"] for m in models["data"]] == ["extractive-triage"]
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model"


def test_requests_per_minute_quota_gives_429_with_retry_after(
    serve: Serve, store: KeyStore
) -> None:
    _, plain = store.create("rpm-2", rpm=2)
    with serve(CONFIG) as gw:
        statuses = []
        for _ in range(3):
            answer = httpx.post(
                f"{gw.base_url}/v1/chat/completions",
                json=chat("extractive-triage"),
                headers=bearer(plain),
            )
            statuses.append(answer.status_code)
        metrics = httpx.get(f"{gw.base_url}/metrics").text
    assert statuses == [200, 200, 429]
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert answer.json()["error"]["code"] == "requests_per_minute"
    assert 'gateway_quota_rejections_total{key="rpm-2",quota="requests_per_minute"} 1.0' in metrics


def test_tokens_per_day_quota_gives_429_with_retry_after_until_midnight(
    serve: Serve, store: KeyStore
) -> None:
    _, plain = store.create("tiny", tokens_per_day=5)
    with serve(CONFIG) as gw:
        first = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("extractive-triage"),
            headers=bearer(plain),
        )
        second = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json=chat("extractive-triage"),
            headers=bearer(plain),
        )
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 5
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "tokens_per_day"
    assert 1 <= int(second.headers["Retry-After"]) <= 86_400


def test_malformed_body_names_the_wrong_field(serve: Serve, store: KeyStore) -> None:
    _, plain = store.create("any")
    with serve(CONFIG) as gw:
        bad_role = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            json={"model": "extractive-triage", "messages": [{"role": "robot", "content": "x"}]},
            headers=bearer(plain),
        )
        not_json = httpx.post(
            f"{gw.base_url}/v1/chat/completions",
            content=b"{not json",
            headers={**bearer(plain), "Content-Type": "application/json"},
        )
    assert bad_role.status_code == 400
    assert bad_role.json()["error"]["param"] == "messages.0.role"
    assert not_json.status_code == 400
    assert "invalid request" in not_json.json()["error"]["message"]


def test_embedded_key_from_settings_is_registered_for_all_models(gw_settings: Settings) -> None:
    settings = gw_settings.model_copy(
        update={"gateway_api_key": "sgw-embedded-client-key-for-tests"}
    )
    with serve_in_thread(CONFIG, settings) as gw:
        models = httpx.get(
            f"{gw.base_url}/v1/models", headers=bearer("sgw-embedded-client-key-for-tests")
        )
    assert models.status_code == 200
    assert {m["id"] for m in models.json()["data"]} == {"extractive-triage", "other-model"}
