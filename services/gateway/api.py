"""The HTTP endpoints: thin handlers over `Gateway` (services/gateway/service.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.gateway.requestlog import RequestContext
from services.gateway.schemas import ChatRequest
from services.gateway.service import Gateway

router = APIRouter()


def _parts(request: Request) -> tuple[Gateway, RequestContext]:
    gateway: Gateway = request.app.state.gateway
    return gateway, request.state.gateway


@router.post(
    "/v1/chat/completions",
    summary="OpenAI chat completions (stream: true answers server-sent events)",
    response_model=None,
)
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    gateway, ctx = _parts(request)
    return await gateway.chat(body, ctx)


@router.get("/v1/models", summary="The models the caller's key may use")
async def models(request: Request) -> dict[str, Any]:
    gateway, ctx = _parts(request)
    return await gateway.models(ctx)


@router.get("/v1/tools", summary="The sentinel tools (JSON Schemas) that sentinel_tools adds")
async def tools(request: Request) -> dict[str, Any]:
    gateway, ctx = _parts(request)
    return await gateway.tool_list(ctx)


@router.get("/health", summary="Liveness and the upstreams' breaker states")
async def health(request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    return gateway.health()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics_text(), media_type="text/plain; version=0.0.4")
