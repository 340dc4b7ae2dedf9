"""The evaluations' way to the LLM gateway: the configured one, or one started in this process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from sentinel.settings import Settings

RULE_HEADER = "X-Sentinel-Rule"


class GatewayCallError(RuntimeError):
    """A gateway call that did not return an answer (HTTP error, timeout, malformed reply)."""


@dataclass(frozen=True)
class Completion:
    content: str
    latency_ms: float
    upstream: str | None


class GatewayClient:
    """POST /v1/chat/completions with the evaluation's key; one pooled async client."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout_s: float = 60.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.attempts = max(attempts, 1)
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    async def chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        rule: str | None = None,
        temperature: float = 0.0,
    ) -> Completion:
        headers = {RULE_HEADER: rule} if rule else {}
        body = {"model": model, "messages": messages, "temperature": temperature}
        for attempt in range(1, self.attempts + 1):
            started = time.perf_counter()
            try:
                response = await self._http.post("/v1/chat/completions", json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                # A pooled connection the server just closed, a refused connect: worth a retry
                # (temperature 0, so asking again is harmless). Timeouts are not retried.
                if attempt == self.attempts or isinstance(exc, httpx.TimeoutException):
                    raise GatewayCallError(
                        f"{self.base_url}: {type(exc).__name__} after {attempt} attempt(s): {exc}"
                    ) from None
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            except httpx.HTTPError as exc:
                raise GatewayCallError(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        latency = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise GatewayCallError(
                f"{self.base_url}: HTTP {response.status_code} for model {model}: "
                f"{response.text[:300]}"
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise GatewayCallError(
                f"{self.base_url}: reply without choices[0].message.content: {response.text[:300]}"
            ) from None
        if not isinstance(content, str):
            raise GatewayCallError(f"{self.base_url}: message content is {type(content).__name__}")
        return Completion(content, latency, response.headers.get("x-sentinel-upstream"))

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass(frozen=True)
class GatewayEndpoint:
    base_url: str  # without /v1
    api_key: str
    embedded: bool


@contextmanager
def gateway_endpoint(settings: Settings) -> Iterator[GatewayEndpoint]:
    """`settings.gateway_url` when set (with `gateway_api_key`); else a gateway started here,
    on a free loopback port, for the duration of the block."""
    if settings.gateway_url:
        if not settings.gateway_api_key:
            raise GatewayCallError(
                f"SENTINEL_GATEWAY_URL is {settings.gateway_url} but SENTINEL_GATEWAY_API_KEY is "
                "unset: set the key the gateway knows the evaluations by"
            )
        yield GatewayEndpoint(settings.gateway_base_url, settings.gateway_api_key, embedded=False)
        return
    from services.gateway.config import load_config
    from services.gateway.server import serve_in_thread

    # The embedded gateway registers settings.gateway_api_key on start; a run without one gets
    # a key of its own.
    key = settings.gateway_api_key or f"evals-{secrets.token_urlsafe(18)}"
    local = settings.model_copy(update={"gateway_api_key": key})
    with serve_in_thread(load_config(local), local) as handle:
        yield GatewayEndpoint(handle.base_url, key, embedded=True)
