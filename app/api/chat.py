"""OpenAI-compatible RAG: /v1/chat/completions answering from a collection, usable by the official clients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from app.api.answer_shapes import answer_response
from app.api.ask import ask_input
from app.deps import ComponentsDep, TenantDep
from app.errors import stream_error_body
from app.rag.answering import Answer
from app.rag.errors import InvalidInputError
from app.schemas.ask import AskRequest, Turn
from app.schemas.chat import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    chunk_payload,
)
from app.services import asking

logger = logging.getLogger(__name__)

router = APIRouter(tags=["openai-compatible"])


def _as_ask_request(body: ChatCompletionRequest) -> AskRequest:
    """The last user message is the question; earlier user/assistant turns are its history. System messages
    are not forwarded: the prompt templates in prompts/ say what the model is told."""
    turns = [m for m in body.messages if m.role in ("user", "assistant") and m.content]
    if not turns or turns[-1].role != "user":
        raise InvalidInputError("the last message must be a user message with content", param="messages")
    question = turns[-1].content or ""
    try:
        return AskRequest(
            collection=body.collection,
            question=question,
            model=body.model,
            top_k=body.top_k,
            stream=body.stream,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            template=body.template,
            history=[Turn(role=m.role, content=m.content or "") for m in turns[:-1]],
            tz=body.tz,
            compare=body.compare,
        )
    except ValidationError as error:
        # /v1/ask's limits (question length, history turns) apply here too, reported like any bad input.
        first = error.errors()[0]
        raise InvalidInputError(f"messages: {first['msg']}", param="messages") from error


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest, tenant_id: TenantDep, components: ComponentsDep
) -> ChatCompletionResponse | EventSourceResponse:
    """Answer the last user message from a collection, in OpenAI's chat completion shape."""
    ask = _as_ask_request(body)
    # Everything before generation (collection, template, packing) fails here, with its own status.
    started = await asking.start_answer(components, tenant_id=tenant_id, ask=ask_input(ask), endpoint="chat")
    query_id = started.query_id
    completion_id = f"chatcmpl-{query_id}"
    created = int(time.time())
    if not body.stream:
        response = answer_response(await started.result(), query_id, debug=False)
        return ChatCompletionResponse(
            id=completion_id,
            created=created,
            model=response.model,
            choices=[
                ChatChoice(
                    message=ChatMessageOut(
                        content=response.answer, citations=response.citations, grounded=response.grounded
                    )
                )
            ],
            usage=response.usage,
            query_id=query_id,
            refusal=response.refusal,
            route=response.route,
            facts=response.facts,
            fact_check=response.fact_check,
            from_correction=response.from_correction,
        )

    def data(payload: object) -> dict[str, str]:
        # A dict, not a ServerSentEvent: the response then frames it with its own line separator.
        return {"data": json.dumps(payload, ensure_ascii=False)}

    def chunk(model: str, delta: dict[str, Any], **extra: Any) -> dict[str, str]:
        return data(
            chunk_payload(completion_id=completion_id, created=created, model=model, delta=delta, **extra)
        )

    async def chunks() -> AsyncIterator[dict[str, str]]:
        yield chunk(started.prepared.route.model, {"role": "assistant", "content": ""})
        try:
            async for item in started.events():
                if isinstance(item, Answer):
                    final = answer_response(item, query_id, debug=False)
                    # The streamed text is the model's; the checked answer (which may be the refusal) and its
                    # citations come with the last chunk.
                    extra = {
                        "citations": [c.model_dump() for c in final.citations],
                        "grounded": final.grounded,
                        "refusal": final.refusal.model_dump() if final.refusal else None,
                        "answer": final.answer,
                        "query_id": query_id,
                        "usage": final.usage.model_dump(),
                        "route": final.route.model_dump(exclude_none=True) if final.route else None,
                        "facts": [f.model_dump() for f in final.facts],
                        "fact_check": final.fact_check.model_dump(),
                        "from_correction": final.from_correction,
                    }
                    yield chunk(final.model, {}, finish_reason="stop", extra=extra)
                else:
                    yield chunk(started.prepared.route.model, {"content": item})
        except Exception as error:
            logger.exception("streaming chat completion %s failed", query_id)
            yield data(stream_error_body(error))
        yield {"data": "[DONE]"}

    return EventSourceResponse(
        chunks(),
        ping=components.settings.sse_keepalive_seconds,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
