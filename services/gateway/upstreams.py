"""Upstreams and routing: OpenAI-compatible servers over HTTP (vLLM and the like) and the built-in
extractive model, each behind a circuit breaker; a model's targets are tried in order.

An `openai` upstream is retried on connect errors, 5xx and 429 with exponential backoff, never on
other 4xx. A target that still fails, or whose breaker is open, falls over to the next target.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from services.gateway.config import GatewayConfig, ModelConfig, TargetConfig, UpstreamConfig
from services.gateway.errors import GatewayError
from services.gateway.metrics import GatewayMetrics
from streams.enrichment.resilience import BreakerState, CircuitBreaker

Chunks = AsyncGenerator[dict[str, Any], None]
Clock = Callable[[], float]
# Fields only some targets understand: stripped for targets without the tools capability.
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
# Client errors the upstream found in the request itself: answered to the client, no fallback.
CLIENT_ERRORS = frozenset({400, 413, 422})


class UpstreamFailure(Exception):
    """The target failed (after its retries): the next target is tried. `kind` is a metric
    label (connect_error, timeout, http_5xx, http_429, http_4xx, bad_response, error)."""

    def __init__(self, upstream: str, kind: str, detail: str) -> None:
        super().__init__(f"upstream {upstream}: {detail}")
        self.upstream = upstream
        self.kind = kind
        self.detail = detail


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message, whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class Upstream:
    """One upstream: a breaker, a non-streaming call and a streaming call."""

    def __init__(self, config: UpstreamConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self.breaker = CircuitBreaker(
            config.breaker.failure_threshold, config.breaker.open_s, clock=clock
        )

    async def complete(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    async def open_stream(self, body: dict[str, Any], headers: dict[str, str]) -> Chunks:
        """Start a streamed completion; failures before the first chunk raise here."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class OpenAIUpstream(Upstream):
    """An OpenAI-protocol server: POST {base_url}/chat/completions, JSON or SSE."""

    def __init__(self, config: UpstreamConfig, clock: Clock = time.monotonic) -> None:
        super().__init__(config, clock)
        assert config.base_url is not None
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._url = httpx.URL(config.base_url.rstrip("/") + "/chat/completions")
        self._headers = headers
        self._timeout = timeout.as_dict()
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        # aiohttp's client under httpx: httpx's own transport (httpcore over anyio) cost about
        # 2 ms of CPU per proxied call here, most of the gateway's added latency.
        transport = (
            AiohttpTransport(limits=limits, trust_env=False)
            if config.transport == "aiohttp"
            else None
        )
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
            trust_env=False,  # no proxy or netrc from the environment: the config says where
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _send(
        self, body: dict[str, Any], headers: dict[str, str], *, stream: bool
    ) -> httpx.Response:
        """The first 2xx response, retrying what may pass; raises UpstreamFailure otherwise."""
        content = orjson.dumps(body)
        failure = UpstreamFailure(self.name, "error", "no attempt made")
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            # Built here rather than by `client.build_request`: the URL, headers and timeouts
            # are the same for every call (merging them per call was measurable).
            request = httpx.Request(
                "POST",
                self._url,
                headers={**self._headers, **headers},
                content=content,
                extensions={"timeout": self._timeout},
            )
            try:
                response = await self.client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = UpstreamFailure(self.name, "connect_error", f"cannot connect: {exc!r}")
                continue
            except httpx.TimeoutException:
                # A slow answer is not retried: another full wait would double the delay.
                raise UpstreamFailure(
                    self.name, "timeout", f"no answer within {self.config.timeout_s} s"
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamFailure(self.name, "error", repr(exc)) from None
            status = response.status_code
            if status < 400:
                return response
            detail = _error_message(await response.aread())
            await response.aclose()
            if status == 429 or status >= 500:
                kind = "http_429" if status == 429 else "http_5xx"
                failure = UpstreamFailure(self.name, kind, f"HTTP {status}: {detail}")
                continue
            if status in CLIENT_ERRORS:
                raise GatewayError(
                    400,
                    f"upstream {self.name} rejected the request (HTTP {status}): {detail}",
                    code="upstream_rejected",
                )
            raise UpstreamFailure(self.name, "http_4xx", f"HTTP {status}: {detail}")
        raise failure

    async def complete(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        response = await self._send(body, headers, stream=False)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(self.name, "bad_response", "answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamFailure(self.name, "bad_response", "answer has no `choices` list")
        return answer

    async def open_stream(self, body: dict[str, Any], headers: dict[str, str]) -> Chunks:
        response = await self._send(body, headers, stream=True)
        return self._chunks(response)

    async def _chunks(self, response: httpx.Response) -> Chunks:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, event names, keep-alives
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamFailure(
                        self.name, "bad_response", f"stream chunk is not JSON: {data[:80]!r}"
                    ) from None
                if isinstance(chunk, dict):
                    yield chunk
        except httpx.TimeoutException:
            raise UpstreamFailure(
                self.name, "timeout", f"stream stalled for {self.config.timeout_s} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(self.name, "error", f"stream broke: {exc!r}") from None
        finally:
            await response.aclose()


class ExtractiveUpstream(Upstream):
    """The built-in deterministic triage model (services/gateway/extractive.py), run in a thread."""

    STREAM_PIECES = 4

    def __init__(self, config: UpstreamConfig, clock: Clock = time.monotonic) -> None:
        super().__init__(config, clock)
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from services.gateway.extractive import ExtractiveModel

            self._model = ExtractiveModel()
        return self._model

    async def _run(self, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
        def work() -> tuple[str, int, int]:
            model = self._load()
            content = model.complete(messages)
            prompt = sum(model.count_tokens(message_text(m)) for m in messages)
            return content, prompt, model.count_tokens(content)

        try:
            return await asyncio.wait_for(asyncio.to_thread(work), self.config.timeout_s)
        except TimeoutError:
            raise UpstreamFailure(
                self.name, "timeout", f"no answer within {self.config.timeout_s} s"
            ) from None
        except Exception as exc:  # the model's bug is this target's failure, not the gateway's
            raise UpstreamFailure(self.name, "error", f"extractive model failed: {exc!r}") from exc

    async def complete(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        content, prompt, completion = await self._run(body["messages"])
        return {
            "id": completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def open_stream(self, body: dict[str, Any], headers: dict[str, str]) -> Chunks:
        content, prompt, completion = await self._run(body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return self._pieces(body["model"], content, usage)

    async def _pieces(self, model: str, content: str, usage: dict[str, int]) -> Chunks:
        base = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        size = max(1, -(-len(content) // self.STREAM_PIECES))
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for start in range(0, len(content), size):
            piece = content[start : start + size]
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": usage}


def _error_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace") or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)[:200]


def build_upstream(config: UpstreamConfig, clock: Clock = time.monotonic) -> Upstream:
    if config.kind == "openai":
        return OpenAIUpstream(config, clock)
    return ExtractiveUpstream(config, clock)


@dataclass
class Route:
    """How a request was served: the target used, the targets that failed before it, time."""

    model: str
    target: TargetConfig | None = None
    tried: list[dict[str, str]] = field(default_factory=list)
    upstream_s: float = 0.0

    @property
    def upstream(self) -> str | None:
        return self.target.upstream if self.target else None


class Router:
    """The models of the configuration, each an ordered list of targets over the upstreams."""

    def __init__(
        self, config: GatewayConfig, metrics: GatewayMetrics, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.upstreams = {u.name: build_upstream(u, clock) for u in config.upstreams}

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams.values()))

    def breakers(self) -> dict[str, CircuitBreaker]:
        return {name: u.breaker for name, u in self.upstreams.items()}

    def model(self, name: str) -> ModelConfig:
        spec = self.config.models.get(name)
        if spec is None:
            raise GatewayError(
                404,
                f"model '{name}' does not exist (GET /v1/models lists the models of your key)",
                code="model_not_found",
                param="model",
            )
        return spec

    def candidates(self, name: str, body: dict[str, Any]) -> list[tuple[TargetConfig, bool]]:
        """(target, forwards tools) in order; 400 when the request needs tools no target has."""
        spec = self.model(name)
        has_tools = bool(body.get("tools") or body.get("functions"))
        needs_tools = has_tools and body.get("tool_choice") != "none"
        out = [(t, spec.target_has_tools(t)) for t in spec.targets]
        if needs_tools:
            out = [(t, capable) for t, capable in out if capable]
            if not out:
                raise GatewayError(
                    400,
                    f"model '{name}' has no target that supports tools; drop `tools` or use "
                    "a model with the tools capability",
                    code="tools_not_supported",
                    param="tools",
                )
        return out

    def _body(
        self, body: dict[str, Any], target: TargetConfig, tools: bool, stream: bool
    ) -> dict[str, Any]:
        out = {**body, "model": target.model, "stream": stream}
        if not tools:
            for name in TOOL_FIELDS:
                out.pop(name, None)
        if stream:
            # Usage comes in a last chunk; it is forwarded only when the client asked for it.
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            out.pop("stream_options", None)
        return out

    def _usable(self, route: Route, target: TargetConfig) -> Upstream | None:
        upstream = self.upstreams[target.upstream]
        reason = None
        if not upstream.config.enabled:
            reason = "disabled"
        elif not upstream.breaker.allow():
            reason = "circuit_open"
        if reason is None:
            return upstream
        route.tried.append({"upstream": upstream.name, "reason": reason})
        self.metrics.fallbacks.labels(route.model, upstream.name, reason).inc()
        return None

    def _failed(self, route: Route, upstream: Upstream, exc: UpstreamFailure) -> None:
        upstream.breaker.record_failure()
        route.tried.append({"upstream": upstream.name, "reason": exc.kind, "detail": exc.detail})
        self.metrics.fallbacks.labels(route.model, upstream.name, exc.kind).inc()

    def _exhausted(self, route: Route) -> GatewayError:
        tried = "; ".join(f"{t['upstream']}: {t.get('detail', t['reason'])}" for t in route.tried)
        return GatewayError(
            502 if any("detail" in t for t in route.tried) else 503,
            f"no upstream of model '{route.model}' could answer ({tried})",
            type="upstream_error",
            code="upstreams_unavailable",
        )

    async def complete(
        self, route: Route, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        for target, tools in self.candidates(route.model, body):
            upstream = self._usable(route, target)
            if upstream is None:
                continue
            started = time.perf_counter()
            try:
                answer = await upstream.complete(self._body(body, target, tools, False), headers)
            except UpstreamFailure as exc:
                self._failed(route, upstream, exc)
                continue
            except BaseException:
                upstream.breaker.record_abandoned()
                raise
            finally:
                elapsed = time.perf_counter() - started
                route.upstream_s += elapsed
                self.metrics.upstream_latency.labels(upstream.name).observe(elapsed)
            upstream.breaker.record_success()
            route.target = target
            answer["model"] = route.model
            return answer
        raise self._exhausted(route)

    async def open_stream(
        self, route: Route, body: dict[str, Any], headers: dict[str, str]
    ) -> Chunks:
        """The chunks of the first target that starts streaming (fallback before the first
        chunk only: once bytes went to the client, a failure ends the stream)."""
        for target, tools in self.candidates(route.model, body):
            upstream = self._usable(route, target)
            if upstream is None:
                continue
            started = time.perf_counter()
            try:
                chunks = await upstream.open_stream(self._body(body, target, tools, True), headers)
            except UpstreamFailure as exc:
                self._failed(route, upstream, exc)
                route.upstream_s += time.perf_counter() - started
                continue
            except BaseException:
                upstream.breaker.record_abandoned()
                raise
            upstream.breaker.record_success()
            route.target = target
            return self._timed(route, upstream, chunks, started)
        raise self._exhausted(route)

    async def _timed(
        self, route: Route, upstream: Upstream, chunks: Chunks, started: float
    ) -> Chunks:
        waited = time.perf_counter() - started
        try:
            while True:
                begin = time.perf_counter()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                finally:
                    waited += time.perf_counter() - begin
                chunk["model"] = route.model
                yield chunk
        except UpstreamFailure:
            upstream.breaker.record_failure()
            raise
        finally:
            route.upstream_s += waited
            self.metrics.upstream_latency.labels(upstream.name).observe(waited)
            await chunks.aclose()


def breaker_value(state: BreakerState) -> int:
    return {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}[state]
