"""The gateway's one way in: `create_app(config, settings)` wires the parts into a FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sentinel.settings import Settings
from sentinel.tracing import tracer
from services.gateway.api import router
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError
from services.gateway.requestlog import RequestLogMiddleware
from services.gateway.service import Gateway


def create_app(config: GatewayConfig, settings: Settings) -> FastAPI:
    gateway = Gateway(config, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Sentinel LLM gateway",
        description="OpenAI-compatible gateway: keys, quotas, fallbacks, redacted logs, tools.",
        version="1",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.include_router(router)
    app.add_middleware(
        RequestLogMiddleware,
        requests_log=gateway.requests_log,
        metrics=gateway.metrics,
        tracer=tracer(settings, "sentinel-gateway"),
    )
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """400 naming each wrong field, e.g. `messages.0.role: Input should be 'system', ...`."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        problems.append((".".join(loc) or "(body)", str(error.get("msg"))))
    message = "invalid request: " + "; ".join(f"{field}: {msg}" for field, msg in problems)
    ctx = getattr(request.state, "gateway", None)
    if ctx is not None:
        ctx.record["error"] = message
    return GatewayError(400, message, param=problems[0][0] if problems else None).response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, str(exc.detail), code="http_error").response()
