"""Grounded answers, as JSON or Server-Sent Events, and the templates a request may name."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from app.api.answer_shapes import answer_response
from app.deps import ComponentsDep, TenantDep
from app.errors import stream_error_body
from app.rag.answering import Answer
from app.rag.types import ChatMessage
from app.schemas.ask import AskRequest, AskResponse, TemplateList, TemplatePublic
from app.services import asking

logger = logging.getLogger(__name__)

router = APIRouter(tags=["answers"])


def ask_input(body: AskRequest) -> asking.AskInput:
    return asking.AskInput(
        collection=body.collection,
        question=body.question,
        model=body.model,
        template=body.template,
        top_k=body.top_k,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        history=tuple(ChatMessage(turn.role, turn.content) for turn in body.history),
        timezone=body.tz,
        compare=body.compare,
        stream=body.stream,
    )


def _event(name: str, payload: object) -> dict[str, str]:
    # A dict, not a ServerSentEvent: the response then frames it with its own line separator.
    return {"event": name, "data": json.dumps(payload, ensure_ascii=False)}


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true."}
    },
)
async def ask(
    body: AskRequest, tenant_id: TenantDep, components: ComponentsDep
) -> AskResponse | EventSourceResponse:
    """Answer a question from a collection's documents, with checked citations."""
    # Everything before generation (collection, template, packing) fails here, with its own status.
    started = await asking.start_answer(components, tenant_id=tenant_id, ask=ask_input(body), endpoint="ask")
    if not body.stream:
        return answer_response(await started.result(), started.query_id, debug=body.debug)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for item in started.events():
                if isinstance(item, Answer):
                    final = answer_response(item, started.query_id, debug=body.debug)
                    yield _event("done", final.model_dump())
                else:
                    yield _event("delta", {"text": item})
        except Exception as error:
            logger.exception("streaming answer %s failed", started.query_id)
            yield _event("error", stream_error_body(error))

    return EventSourceResponse(
        events(),
        ping=components.settings.sse_keepalive_seconds,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/templates", response_model=TemplateList)
def list_templates(components: ComponentsDep) -> TemplateList:
    """List the prompt templates a request may name."""
    return TemplateList(
        templates=[
            TemplatePublic(name=t.name, description=t.description, variables=list(t.variables))
            for t in (components.prompts.get(name) for name in components.prompts.names())
        ]
    )
