"""The policy service's one way in: `create_app(settings)` migrates the database and wires the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel.settings import Settings
from sentinel.tracing import tracer
from services.policy.api import router
from services.policy.heartbeats import follow_heartbeats
from services.policy.metrics import Observe, PolicyMetrics
from services.policy.metrics import router as metrics_router
from services.policy.service import Policy


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes")


class Envelope:
    """Pure ASGI: a request id on every request and answer, and body size limits (413)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit(self, path: str) -> int:
        if path == "/ingest":
            return self.settings.policy_ingest_max_bytes
        return self.settings.policy_upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode(errors="replace")[:64]
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.limit(scope["path"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await _reply(send_with_id, 413, f"the request body is larger than {limit:,} bytes")
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send_with_id)


async def _reply(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> FastAPI:
    policy = Policy(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follower = (
            asyncio.create_task(follow_heartbeats(settings, policy.sessions))
            if settings.policy_follow_heartbeats
            else None
        )
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            policy.close()

    app = FastAPI(
        title="Sentinel policy service",
        description="Rule packs: golden-tested uploads, approvals, signing, deployments, RBAC, "
        "a hash-chained audit log, and HTTP ingest for agents.",
        version="1",
        lifespan=lifespan,
    )
    app.state.policy = policy
    app.state.metrics = PolicyMetrics()
    app.include_router(router)
    app.include_router(metrics_router)
    app.add_middleware(Envelope, settings=settings)
    app.add_middleware(
        Observe, metrics=app.state.metrics, tracer=tracer(settings, "sentinel-policy")
    )
    return app


def openapi(settings: Settings) -> dict[str, Any]:
    return create_app(settings).openapi()


def from_environment() -> FastAPI:
    """`uvicorn --factory services.policy.app:from_environment`: the app for SENTINEL_* settings."""
    from sentinel.settings import get_settings

    return create_app(get_settings())
