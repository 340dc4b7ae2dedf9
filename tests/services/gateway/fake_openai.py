"""A small OpenAI-protocol server for tests and the gateway benchmark: POST /v1/chat/completions
(JSON or SSE) and GET /v1/models, scripted from the test (failures, replies, a stream gate).

    python -m tests.services.gateway.fake_openai --port 9101   # the benchmark's upstream
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import deque
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

JSON = [(b"content-type", b"application/json")]


class FakeOpenAI:
    """Records every call; answers `replies` in order (then `pieces` joined) unless told to fail."""

    def __init__(self, pieces: tuple[str, ...] = ("The host ", "looks ", "benign ", "today.")):
        self.pieces = pieces
        self.calls: list[dict[str, Any]] = []
        self.replies: deque[dict[str, Any]] = deque()
        self.fail_next = 0  # this many calls answer `fail_status`
        self.fail_status = 500
        self.report_usage = True
        self.gate: threading.Event | None = None  # a stream waits here after its first chunk
        self.first_chunk_sent = threading.Event()
        self.stream_finished = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/v1/models":
            await self._json(send, 200, {"object": "list", "data": [{"id": "fake-model"}]})
            return
        if path != "/v1/chat/completions":
            await self._json(send, 404, {"error": {"message": f"no route {path}"}})
            return
        request = orjson.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.calls.append({"body": request, "headers": headers})
        if self.fail_next:
            self.fail_next -= 1
            await self._json(
                send, self.fail_status, {"error": {"message": f"scripted {self.fail_status}"}}
            )
            return
        message = (
            self.replies.popleft()
            if self.replies
            else {"role": "assistant", "content": "".join(self.pieces)}
        )
        if request.get("stream"):
            await self._stream(send, request)
        else:
            await self._json(send, 200, self._completion(request, message))

    def _usage(self, request: dict[str, Any]) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
        return {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}

    def _completion(self, request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if self.report_usage:
            answer["usage"] = self._usage(request)
        return answer

    async def _stream(self, send: Send, request: dict[str, Any]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": request["model"]}
        for i, piece in enumerate(self.pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await self._event(send, chunk)
            if i == 0:
                self.first_chunk_sent.set()
                if self.gate is not None:
                    await asyncio.to_thread(self.gate.wait, 10)
        await self._event(
            send, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        if (request.get("stream_options") or {}).get("include_usage") and self.report_usage:
            await self._event(send, {**base, "choices": [], "usage": self._usage(request)})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        self.stream_finished.set()

    @staticmethod
    async def _event(send: Send, chunk: dict[str, Any]) -> None:
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                "more_body": True,
            }
        )

    @staticmethod
    async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
        raw = orjson.dumps(body)
        headers = [*JSON, (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    fake = FakeOpenAI()
    fake.calls = _Discard()  # a long benchmark must not keep every request
    uvicorn.run(fake, host=args.host, port=args.port, log_level="warning", access_log=False)


class _Discard(list[dict[str, Any]]):
    def append(self, _item: dict[str, Any]) -> None:
        return None


if __name__ == "__main__":
    main()
