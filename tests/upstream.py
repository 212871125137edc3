"""A small OpenAI-compatible server for tests, run for real on loopback; its behaviour follows the model name:
``ok`` answers, ``slow`` stalls, ``down`` answers 503, ``garbage`` sends non-JSON, ``missing`` is not served
(``/tokenize`` answers 404 as vLLM does)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = "Run git branch to list branches [1]."


def _completion(model: str) -> dict[str, object]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
    }


class UpstreamState:
    def __init__(self) -> None:
        self.streams_closed_early = 0
        self.requests: list[dict[str, object]] = []


def make_app(state: UpstreamState) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        model = body["model"]
        if model == "slow":
            await asyncio.sleep(5)
        if model == "down":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if model == "garbage":
            return PlainTextResponse(
                "<html>proxy error</html>", status_code=200, media_type="application/json"
            )
        if not body.get("stream"):
            return JSONResponse(_completion(model))

        async def chunks() -> AsyncIterator[str]:
            try:
                for piece in [*ANSWER.split(" ")] * (50 if model == "long" else 1):
                    delta = {
                        "choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}]
                    }
                    yield f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', 'created': 0, 'model': model, **delta})}\n\n"
                    await asyncio.sleep(0.02)
                final = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(final)}\n\n"
                usage = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
                }
                yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
            except asyncio.CancelledError:
                state.streams_closed_early += 1
                raise

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def models(_request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "ok", "object": "model", "max_model_len": 2048}]}
        )

    async def tokenize(request: Request) -> Response:
        body = await request.json()
        if body["model"] == "missing":  # as vLLM answers for a model it does not serve
            error = {
                "message": "The model `missing` does not exist.",
                "type": "NotFoundError",
                "param": "model",
            }
            return JSONResponse({"error": {**error, "code": 404}}, status_code=404)
        count = sum(len(m["content"]) for m in body["messages"]) // 3 + 5
        return JSONResponse({"count": count, "max_model_len": 2048, "tokens": []})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/tokenize", tokenize, methods=["POST"]),
        ]
    )


@contextmanager
def running_upstream() -> Iterator[tuple[str, UpstreamState]]:
    state = UpstreamState()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        server.should_exit = True
        thread.join(10)
