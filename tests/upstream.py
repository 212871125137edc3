"""A small OpenAI-compatible server for tests, run for real on loopback; its behaviour follows the model name:
``ok`` answers, ``slow`` stalls, ``down`` answers 503, ``garbage`` sends non-JSON, ``missing`` is not served
(``/tokenize`` and chat answer 404 as vLLM does). Like vLLM it lists and loads LoRA adapters: names in
``UpstreamState.adapters`` are listed by ``/v1/models``, and ``/v1/load_lora_adapter`` adds one when
``runtime_lora`` is on (404 otherwise, as vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING). A name in
``healthy`` answers like ``ok`` whatever it is called (a failing adapter that recovered); one in ``adapters``
that is not loaded any more (``forget``) answers 404 (a server restarted without it)."""

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


def _completion(model: str, logprobs: bool = False) -> dict[str, object]:
    # "unsure" writes the usual answer with low token log-probabilities.
    choice: dict[str, object] = {}
    if logprobs:
        value = -3.0 if model == "unsure" else -0.1
        tokens = [{"token": t, "logprob": value, "bytes": None, "top_logprobs": []} for t in ANSWER.split(" ")]
        choice["logprobs"] = {"content": tokens}
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop", **choice}
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
    }


class UpstreamState:
    def __init__(self) -> None:
        self.streams_closed_early = 0
        self.requests: list[dict[str, object]] = []
        self.adapters: set[str] = set()
        self.runtime_lora = False
        self.healthy: set[str] = set()
        self.loads: list[dict[str, object]] = []
        self.forgotten: set[str] = set()

    def forget(self, name: str) -> None:
        """The server restarts without a runtime-loaded adapter."""
        self.adapters.discard(name)
        self.forgotten.add(name)


def make_app(state: UpstreamState) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        model = body["model"]
        if model == "missing" or model in state.forgotten:
            error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "param": "model"}
            return JSONResponse({"error": {**error, "code": 404}}, status_code=404)
        behaviour = "ok" if model in state.healthy else model
        if behaviour == "slow":
            await asyncio.sleep(5)
        if behaviour == "down":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if behaviour == "garbage":
            return PlainTextResponse(
                "<html>proxy error</html>", status_code=200, media_type="application/json"
            )
        if not body.get("stream"):
            return JSONResponse(_completion(model, bool(body.get("logprobs"))))

        async def chunks() -> AsyncIterator[str]:
            try:
                for piece in [*ANSWER.split(" ")] * (50 if behaviour == "long" else 1):
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
        listed = [{"id": "ok", "object": "model", "max_model_len": 2048}]
        listed += [{"id": name, "object": "model", "parent": "ok"} for name in sorted(state.adapters)]
        return JSONResponse({"object": "list", "data": listed})

    async def load_lora_adapter(request: Request) -> Response:
        if not state.runtime_lora:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = await request.json()
        state.loads.append(body)
        state.adapters.add(str(body["lora_name"]))
        state.forgotten.discard(str(body["lora_name"]))
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

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
            Route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"]),
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
