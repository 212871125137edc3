"""Grounded answers, as JSON or Server-Sent Events, and the templates a request may name."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app import asking
from app.deps import ServicesDep, TenantDep
from app.errors import error_body
from app.rag.answering import Answer
from app.rag.errors import WendaError
from app.schemas.ask import AskRequest, AskResponse, TemplateList, TemplatePublic

logger = logging.getLogger(__name__)

router = APIRouter(tags=["answers"])


def _event(name: str, payload: object) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true."}
    },
)
async def ask(
    body: AskRequest, tenant_id: TenantDep, services: ServicesDep
) -> AskResponse | StreamingResponse:
    """Answer a question from a collection's documents, with checked citations."""
    options = asking.options_from_request(body, services)
    pipeline = await asking.checked_pipeline(services, tenant_id=tenant_id, collection=body.collection)
    query_id = asking.new_query_id()
    if not body.stream:
        return asking.to_response(await pipeline.answer(body.question, options), query_id)

    # Everything before generation (collection, model, packing) fails here, with its own status.
    timings: dict[str, float] = {}
    prepared = await pipeline.prepare(body.question, options, timings)

    async def events() -> AsyncIterator[str]:
        try:
            async for item in pipeline.generate_stream(body.question, options, prepared, timings):
                if isinstance(item, Answer):
                    yield _event("done", asking.to_response(item, query_id).model_dump())
                else:
                    yield _event("delta", {"text": item})
        except WendaError as error:
            yield _event("error", error_body(error)[1])
        except Exception:
            logger.exception("streaming answer %s failed", query_id)
            yield _event(
                "error",
                {
                    "error": {
                        "message": "internal server error; see the server log",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                },
            )

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/templates", response_model=TemplateList)
def list_templates(services: ServicesDep) -> TemplateList:
    """List the prompt templates a request may name."""
    return TemplateList(
        templates=[
            TemplatePublic(name=t.name, description=t.description, variables=list(t.variables))
            for t in (services.prompts.get(name) for name in services.prompts.names())
            if t.name != "rewrite"
        ]
    )
