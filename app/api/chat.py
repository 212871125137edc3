"""OpenAI-compatible RAG: /v1/chat/completions answering from a collection, usable by the official clients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from app import asking
from app.deps import ServicesDep, TenantDep
from app.errors import error_body
from app.rag.answering import Answer
from app.rag.errors import InvalidInputError, WendaError
from app.schemas.ask import AskRequest, Turn
from app.schemas.chat import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    chunk_payload,
)

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
        )
    except ValidationError as error:
        # /v1/ask's limits (question length, history turns) apply here too, reported like any bad input.
        first = error.errors()[0]
        raise InvalidInputError(f"messages: {first['msg']}", param="messages") from error


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest, tenant_id: TenantDep, services: ServicesDep
) -> ChatCompletionResponse | StreamingResponse:
    """Answer the last user message from a collection, in OpenAI's chat completion shape."""
    ask = _as_ask_request(body)
    options = asking.options_from_request(ask, services)
    pipeline = await asking.checked_pipeline(services, tenant_id=tenant_id, collection=ask.collection)
    query_id = asking.new_query_id()
    completion_id = f"chatcmpl-{query_id}"
    created = int(time.time())
    if not body.stream:
        response = asking.to_response(await pipeline.answer(ask.question, options), query_id)
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
        )

    def data(payload: object) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    # Everything before generation (collection, model, packing) fails here, with its own status.
    timings: dict[str, float] = {}
    prepared = await pipeline.prepare(ask.question, options, timings)

    async def chunks() -> AsyncIterator[str]:
        yield data(
            chunk_payload(
                completion_id=completion_id,
                created=created,
                model=options.model,
                delta={"role": "assistant", "content": ""},
            )
        )
        try:
            async for item in pipeline.generate_stream(ask.question, options, prepared, timings):
                if isinstance(item, Answer):
                    final = asking.to_response(item, query_id)
                    # The streamed text is the model's; the checked answer (which may be the refusal) and its
                    # citations come with the last chunk.
                    extra = {
                        "citations": [c.model_dump() for c in final.citations],
                        "grounded": final.grounded,
                        "answer": final.answer,
                        "query_id": query_id,
                        "usage": final.usage.model_dump(),
                    }
                    yield data(
                        chunk_payload(
                            completion_id=completion_id,
                            created=created,
                            model=final.model,
                            delta={},
                            finish_reason="stop",
                            extra=extra,
                        )
                    )
                else:
                    yield data(
                        chunk_payload(
                            completion_id=completion_id,
                            created=created,
                            model=options.model,
                            delta={"content": item},
                        )
                    )
        except WendaError as error:
            yield data(error_body(error)[1])
        except Exception:
            logger.exception("streaming chat completion %s failed", query_id)
            yield data(
                {
                    "error": {
                        "message": "internal server error; see the server log",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                }
            )
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
