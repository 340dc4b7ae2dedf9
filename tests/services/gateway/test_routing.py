"""Retries, fallbacks and circuit breakers against real upstreams on loopback."""

from __future__ import annotations

import httpx

from services.gateway.config import GatewayConfig
from services.gateway.keys import KeyStore
from tests.services.gateway.fake_openai import FakeOpenAI
from tests.services.gateway.gatewaytest import Serve, bearer, chat, make_config, openai_upstream

Fake = tuple[FakeOpenAI, str]


def _post(base_url: str, key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions", json=chat(model), headers=bearer(key), timeout=10
    )


def test_connection_refused_falls_over_to_the_next_target(
    serve: Serve, store: KeyStore, refused_url: str, fake: Fake
) -> None:
    upstream, url = fake
    config = make_config(
        [openai_upstream("dead", refused_url, max_retries=1), openai_upstream("live", url)],
        {
            "m": {
                "targets": [
                    {"upstream": "dead", "model": "dead-model"},
                    {"upstream": "live", "model": "live-model"},
                ]
            }
        },
    )
    _, key = store.create("k")
    with serve(config) as gw:
        answer = _post(gw.base_url, key, "m")
        metrics = httpx.get(f"{gw.base_url}/metrics").text
    assert answer.status_code == 200
    assert answer.headers["x-sentinel-upstream"] == "live"
    assert answer.json()["model"] == "m"
    assert answer.json()["choices"][0]["message"]["content"] == "The host looks benign today."
    assert upstream.calls[0]["body"]["model"] == "live-model"
    assert (
        'gateway_fallbacks_total{model="m",reason="connect_error",upstream="dead"} 1.0' in metrics
    )


def test_http_500_is_retried_then_falls_over_and_400_is_neither(
    serve: Serve, store: KeyStore, fake: Fake, fake_backup: Fake
) -> None:
    failing, url = fake
    backup, backup_url = fake_backup
    config = make_config(
        [openai_upstream("flaky", url, max_retries=2), openai_upstream("backup", backup_url)],
        {
            "m": {
                "targets": [
                    {"upstream": "flaky", "model": "a"},
                    {"upstream": "backup", "model": "b"},
                ]
            }
        },
    )
    _, key = store.create("k")
    with serve(config) as gw:
        failing.fail_next, failing.fail_status = 3, 500
        fell_over = _post(gw.base_url, key, "m")
        calls_after_500 = len(failing.calls)
        failing.fail_next, failing.fail_status = 1, 400
        rejected = _post(gw.base_url, key, "m")
    assert fell_over.status_code == 200
    assert fell_over.headers["x-sentinel-upstream"] == "backup"
    assert fell_over.json()["choices"][0]["message"]["content"] == "backup answer"
    assert calls_after_500 == 3  # the first call and two retries
    assert rejected.status_code == 400  # the request's fault: not retried, no fallback
    assert len(failing.calls) == calls_after_500 + 1
    assert len(backup.calls) == 1
    assert "scripted 400" in rejected.json()["error"]["message"]


def test_429_from_upstream_is_retried(serve: Serve, store: KeyStore, fake: Fake) -> None:
    upstream, url = fake
    config = make_config(
        [openai_upstream("u", url, max_retries=1)],
        {"m": {"targets": [{"upstream": "u", "model": "x"}]}},
    )
    _, key = store.create("k")
    with serve(config) as gw:
        upstream.fail_next, upstream.fail_status = 1, 429
        answer = _post(gw.base_url, key, "m")
    assert answer.status_code == 200
    assert len(upstream.calls) == 2


def test_every_target_failing_is_502_naming_each_failure(
    serve: Serve, store: KeyStore, refused_url: str, fake: Fake
) -> None:
    upstream, url = fake
    config = make_config(
        [openai_upstream("dead", refused_url), openai_upstream("broken", url)],
        {
            "m": {
                "targets": [
                    {"upstream": "dead", "model": "x"},
                    {"upstream": "broken", "model": "y"},
                ]
            }
        },
    )
    _, key = store.create("k")
    with serve(config) as gw:
        upstream.fail_next = 1
        answer = _post(gw.base_url, key, "m")
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "dead: cannot connect" in message
    assert "broken: HTTP 500" in message


def _breaker_state(base_url: str, upstream: str) -> str:
    return str(httpx.get(f"{base_url}/health").json()["upstreams"][upstream]["breaker"])


def _breaker_config(url: str, open_s: float) -> GatewayConfig:
    return make_config(
        [openai_upstream("u", url, breaker={"failure_threshold": 2, "open_s": open_s})],
        {
            "m": {
                "targets": [
                    {"upstream": "u", "model": "x"},
                    {"upstream": "extractive", "model": "extractive-triage"},
                ]
            }
        },
    )


def test_breaker_opens_after_n_failures_and_skips_the_upstream(
    serve: Serve, store: KeyStore, fake: Fake
) -> None:
    upstream, url = fake
    _, key = store.create("k")
    with serve(_breaker_config(url, open_s=600)) as gw:
        upstream.fail_next = 2
        served_by = [_post(gw.base_url, key, "m").headers["x-sentinel-upstream"] for _ in range(3)]
        state = _breaker_state(gw.base_url, "u")
        metrics = httpx.get(f"{gw.base_url}/metrics").text
    assert served_by == ["extractive", "extractive", "extractive"]
    assert len(upstream.calls) == 2  # the third request skipped the open circuit
    assert state == "open"
    assert 'gateway_circuit_breaker_state{upstream="u"} 2.0' in metrics
    assert 'gateway_fallbacks_total{model="m",reason="circuit_open",upstream="u"} 1.0' in metrics


def test_breaker_half_opens_after_the_open_time_and_a_good_trial_closes_it(
    serve: Serve, store: KeyStore, fake: Fake
) -> None:
    upstream, url = fake
    _, key = store.create("k")
    # open_s 0: the opened circuit is half-open at once, so no test has to wait for it.
    with serve(_breaker_config(url, open_s=0)) as gw:
        upstream.fail_next = 2
        for _ in range(2):
            _post(gw.base_url, key, "m")
        state_after_failures = _breaker_state(gw.base_url, "u")
        metrics = httpx.get(f"{gw.base_url}/metrics").text
        trial = _post(gw.base_url, key, "m")
        state_after_trial = _breaker_state(gw.base_url, "u")
    assert state_after_failures == "half_open"
    assert 'gateway_circuit_breaker_opened{upstream="u"} 1.0' in metrics
    assert trial.headers["x-sentinel-upstream"] == "u"
    assert len(upstream.calls) == 3
    assert state_after_trial == "closed"


def test_disabled_upstream_is_skipped(serve: Serve, store: KeyStore, fake: Fake) -> None:
    upstream, url = fake
    config = make_config(
        [openai_upstream("off", url, enabled=False)],
        {
            "m": {
                "targets": [
                    {"upstream": "off", "model": "x"},
                    {"upstream": "extractive", "model": "extractive-triage"},
                ]
            }
        },
    )
    _, key = store.create("k")
    with serve(config) as gw:
        answer = _post(gw.base_url, key, "m")
    assert answer.headers["x-sentinel-upstream"] == "extractive"
    assert upstream.calls == []
