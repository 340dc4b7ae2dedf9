"""What the gateway does per request: authenticate, authorize, admit (quotas), route with
fallbacks, run sentinel tools, stream, count usage, fill the request's log line and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from sentinel.logs import get_logger
from sentinel.settings import Settings
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError
from services.gateway.keys import Accounting, ApiKey, KeyStore
from services.gateway.metrics import GatewayMetrics
from services.gateway.redaction import Redactor
from services.gateway.requestlog import RequestContext, RequestLog
from services.gateway.schemas import ChatRequest
from services.gateway.tools import TOOL_NAMES, TOOLS, ToolExecutor
from services.gateway.upstreams import Chunks, Route, Router, UpstreamFailure, breaker_value
from services.gateway.upstreams import message_text as text_of

log = get_logger(__name__)
EMBEDDED_KEY_NAME = "embedded"
RULE_HEADER = "x-sentinel-rule"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Gateway:
    """The gateway's parts, built once per app from the configuration and the settings."""

    def __init__(self, config: GatewayConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.router = Router(config, self.metrics)
        self.store = KeyStore(settings.gateway_database_url)
        self.accounting = Accounting(self.store, config.key_cache_s, config.usage_flush_s)
        self.tools = ToolExecutor(settings, config.tools.timeline_limit)
        self.redactor = Redactor(config.redaction)
        self.requests_log = RequestLog(config.requests_log(settings), self.redactor)
        self._log_flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.gateway_api_key:
            await asyncio.to_thread(
                self.store.register, EMBEDDED_KEY_NAME, self.settings.gateway_api_key
            )
        await self.accounting.start()
        self._log_flusher = asyncio.create_task(self._flush_log_forever())
        log.info(
            "gateway started",
            config=self.config.source,
            models=sorted(self.config.models),
            requests_log=str(self.requests_log.path),
        )

    async def stop(self) -> None:
        if self._log_flusher is not None:
            self._log_flusher.cancel()
            await asyncio.gather(self._log_flusher, return_exceptions=True)
        await self.accounting.stop()
        await self.router.aclose()
        self.requests_log.close()
        self.store.close()

    async def _flush_log_forever(self) -> None:
        while True:  # lines reach the file within FLUSH_S even when no request follows
            await asyncio.sleep(self.requests_log.FLUSH_S)
            self.requests_log.flush()

    # --- endpoints

    async def key_of(self, ctx: RequestContext) -> ApiKey:
        key = await self.accounting.authenticate(ctx.headers.get("authorization"))
        ctx.record["key"] = key.name
        ctx.record["key_prefix"] = key.prefix
        return key

    async def models(self, ctx: RequestContext) -> dict[str, Any]:
        key = await self.key_of(ctx)
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "sentinel-gateway",
                    "description": spec.description,
                    "capabilities": {"tools": any(spec.target_has_tools(t) for t in spec.targets)},
                }
                for name, spec in self.config.models.items()
                if key.allows(name)
            ],
        }

    async def tool_list(self, ctx: RequestContext) -> dict[str, Any]:
        await self.key_of(ctx)
        return {"object": "list", "data": TOOLS}

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "upstreams": {
                name: {"enabled": u.config.enabled, "breaker": u.breaker.state.value}
                for name, u in self.router.upstreams.items()
            },
        }

    def metrics_text(self) -> bytes:
        for name, breaker in self.router.breakers().items():
            self.metrics.breaker_state.labels(name).set(breaker_value(breaker.state))
            self.metrics.breaker_opened.labels(name).set(breaker.times_opened)
        return self.metrics.render()

    async def chat(self, request: ChatRequest, ctx: RequestContext) -> Response:
        route = Route(request.model)
        rule = ctx.headers.get(RULE_HEADER) or None
        record = ctx.record
        record.update(model=request.model, stream=request.stream, rule=rule)
        body = request.upstream_body()
        if self.config.logs.request_body:
            record["request_body"] = body
        try:
            key = await self.key_of(ctx)
            self.accounting.authorize(key, request.model)
            self.router.model(request.model)
            try:
                await self.accounting.admit(key)
            except GatewayError as exc:
                self.metrics.quota_rejections.labels(key.name, exc.code or "").inc()
                raise
            headers = {"traceparent": ctx.trace.header()}
            if request.sentinel_tools:
                answer = await self._with_tools(route, body, headers, ctx)
                if request.stream:
                    return self._stream(route, _as_chunks(answer), key, rule, request, ctx)
                return self._answer(route, answer, key, rule, request, ctx)
            if request.stream:
                chunks = await self.router.open_stream(route, body, headers)
                self._route_headers(route, ctx)
                return self._stream(route, chunks, key, rule, request, ctx)
            answer = await self.router.complete(route, body, headers)
            return self._answer(route, answer, key, rule, request, ctx)
        except GatewayError as exc:
            self._routed(route, ctx)
            record["error"] = exc.message
            record["error_code"] = exc.code
            self.metrics.requests.labels(request.model, route.upstream or "", exc.status).inc()
            return exc.response()

    # --- helpers

    def _routed(self, route: Route, ctx: RequestContext) -> None:
        ctx.upstream_s = route.upstream_s
        ctx.record["upstream"] = route.upstream
        ctx.record["upstream_model"] = route.target.model if route.target else None
        ctx.record["fallbacks"] = route.tried

    def _route_headers(self, route: Route, ctx: RequestContext) -> None:
        if route.upstream:
            ctx.response_headers["x-sentinel-upstream"] = route.upstream
        ctx.response_headers["x-sentinel-fallbacks"] = str(len(route.tried))

    def _account(
        self,
        route: Route,
        key: ApiKey,
        rule: str | None,
        request: ChatRequest,
        usage: dict[str, Any] | None,
        completion_text: str,
        ctx: RequestContext,
    ) -> None:
        if usage and isinstance(usage.get("prompt_tokens"), int):
            prompt = int(usage["prompt_tokens"])
            completion = int(usage.get("completion_tokens") or 0)
        else:  # an upstream that reports no usage: about four characters a token
            prompt = sum(len(text_of(m.model_dump())) for m in request.messages) // 4 + 1
            completion = len(completion_text) // 4 + 1
        self.accounting.record(key, request.model, rule, prompt, completion)
        self.metrics.tokens.labels(request.model, "prompt").inc(prompt)
        self.metrics.tokens.labels(request.model, "completion").inc(completion)
        ctx.record["tokens"] = {"prompt": prompt, "completion": completion}
        self.metrics.requests.labels(request.model, route.upstream or "", 200).inc()

    def _answer(
        self,
        route: Route,
        answer: dict[str, Any],
        key: ApiKey,
        rule: str | None,
        request: ChatRequest,
        ctx: RequestContext,
    ) -> Response:
        self._routed(route, ctx)
        self._route_headers(route, ctx)
        choices = answer.get("choices") or [{}]
        content = text_of((choices[0] or {}).get("message") or {})
        self._account(route, key, rule, request, answer.get("usage"), content, ctx)
        if self.config.logs.response_body:
            ctx.record["response"] = answer
        return Response(orjson.dumps(answer), media_type="application/json")

    def _stream(
        self,
        route: Route,
        chunks: Chunks,
        key: ApiKey,
        rule: str | None,
        request: ChatRequest,
        ctx: RequestContext,
    ) -> Response:
        self._route_headers(route, ctx)
        wants_usage = bool((request.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            usage: dict[str, Any] | None = None
            text: list[str] = []
            try:
                async for chunk in chunks:
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content")
                        if isinstance(piece, str):
                            text.append(piece)
                    if not wants_usage:
                        if not chunk.get("choices") and "usage" in chunk:
                            continue  # asked for by the gateway, not by the client
                        chunk.pop("usage", None)
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            except UpstreamFailure as exc:
                ctx.record["error"] = exc.detail
                error = GatewayError(502, str(exc), type="upstream_error", code=exc.kind)
                yield b"data: " + orjson.dumps(error.body()) + b"\n\n"
            finally:
                await chunks.aclose()  # a client that went away frees the upstream connection
                self._routed(route, ctx)
                self._account(route, key, rule, request, usage, "".join(text), ctx)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def _with_tools(
        self,
        route: Route,
        body: dict[str, Any],
        headers: dict[str, str],
        ctx: RequestContext,
    ) -> dict[str, Any]:
        """Offer the sentinel tools and answer the model's calls to them, up to max_rounds
        times; the answer that calls no sentinel tool (or the last one) goes to the client."""
        own = [t for t in body.get("tools") or () if t["function"]["name"] not in TOOL_NAMES]
        body = {**body, "tools": [*own, *TOOLS]}
        messages = list(body["messages"])
        prompt = completion = 0
        called: list[str] = []
        answer: dict[str, Any] = {}
        for round_ in range(self.config.tools.max_rounds + 1):
            answer = await self.router.complete(route, {**body, "messages": messages}, headers)
            usage = answer.get("usage") or {}
            prompt += int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
            message = (answer.get("choices") or [{}])[0].get("message") or {}
            calls = message.get("tool_calls") or []
            names = [(c.get("function") or {}).get("name") for c in calls]
            if not calls or any(n not in TOOL_NAMES for n in names):
                break
            if round_ == self.config.tools.max_rounds:
                ctx.record["tool_rounds_exhausted"] = True
                break
            messages.append(message)
            for call, name in zip(calls, names, strict=True):
                result = await self.tools.run(
                    str(name), (call.get("function") or {}).get("arguments") or "{}"
                )
                outcome = "error" if "error" in result else "ok"
                self.metrics.tool_calls.labels(str(name), outcome).inc()
                called.append(str(name))
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.get("id"),
                        "content": orjson.dumps(result, default=str).decode(),
                    }
                )
        ctx.record["tools_called"] = called
        if prompt or completion:
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return answer


async def _as_chunks(answer: dict[str, Any]) -> Chunks:
    """A finished answer as stream chunks (sentinel tools run to the end before streaming)."""
    base = {k: answer.get(k) for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    delta = {k: v for k, v in message.items() if v is not None}
    yield {**base, "choices": [{"index": 0, "delta": delta}]}
    yield {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}],
    }
    if answer.get("usage"):
        yield {**base, "choices": [], "usage": answer["usage"]}
