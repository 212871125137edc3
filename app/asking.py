"""Answering for a request: the tenant's collection as the retriever, options from the request, and the
mapping of a domain ``Answer`` to the HTTP contract."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from app import search
from app.db import documents as db_documents
from app.rag.answering import Answer, AnswerPipeline, AskOptions, answer_payload_debug
from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.llm import GenerationParams
from app.rag.types import ChatMessage, RetrievedChunk
from app.schemas.ask import AskRequest, AskResponse, CitationPublic, SentencePublic, UsagePublic
from app.services import Services


def check_collection(services: Services, *, tenant_id: int, collection: str) -> None:
    """404 for a collection the tenant does not have (blocking: call it off the event loop)."""
    with services.session_factory() as session:
        if db_documents.get_collection(session, tenant_id=tenant_id, name=collection) is None:
            raise NotFoundError(f"collection {collection!r} not found", param="collection")


def collection_retriever(
    services: Services, *, tenant_id: int, collection: str
) -> Callable[[str, int], Awaitable[list[RetrievedChunk]]]:
    """Retrieval over one of the tenant's collections, run off the event loop."""

    def blocking(question: str, top_k: int) -> list[RetrievedChunk]:
        with services.session_factory() as session:
            return search.retrieve(
                session,
                services.retriever,
                tenant_id=tenant_id,
                collection_name=collection,
                query=question,
                top_k=top_k,
                diversify=False,  # an answer often needs several passages of one document
            )

    async def retrieve(question: str, top_k: int) -> list[RetrievedChunk]:
        return await run_in_threadpool(blocking, question, top_k)

    return retrieve


def options_from_request(body: AskRequest, services: Services) -> AskOptions:
    settings = services.settings
    top_k = body.top_k or settings.retrieval.answer_top_k
    if top_k > settings.retrieval.max_top_k:
        raise InvalidInputError(f"top_k must be at most {settings.retrieval.max_top_k}", param="top_k")
    template = services.prompts.get(body.template)  # an unknown template is a 404 before any work
    return AskOptions(
        model=body.model or services.llm.default_model,
        template=body.template,
        top_k=top_k,
        params=GenerationParams(
            temperature=0.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            max_tokens=body.max_tokens or settings.llm.max_tokens,
            stop=template.stop,
        ),
        history=tuple(ChatMessage(turn.role, turn.content) for turn in body.history),
        debug=body.debug,
    )


async def checked_pipeline(services: Services, *, tenant_id: int, collection: str) -> AnswerPipeline:
    """The pipeline for a request, after checking off the event loop that the collection exists."""
    await run_in_threadpool(check_collection, services, tenant_id=tenant_id, collection=collection)
    return _pipeline(services, tenant_id=tenant_id, collection=collection)


def pipeline_for(services: Services, *, tenant_id: int, collection: str) -> AnswerPipeline:
    """The same for blocking callers (the command line)."""
    check_collection(services, tenant_id=tenant_id, collection=collection)
    return _pipeline(services, tenant_id=tenant_id, collection=collection)


def _pipeline(services: Services, *, tenant_id: int, collection: str) -> AnswerPipeline:
    return AnswerPipeline(
        llm=services.llm,
        prompts=services.prompts,
        retrieve=collection_retriever(services, tenant_id=tenant_id, collection=collection),
    )


def new_query_id() -> str:
    return uuid.uuid4().hex


def to_response(answer: Answer, query_id: str) -> AskResponse:
    checked = answer.checked
    debug: dict[str, Any] | None = answer_payload_debug(answer) if answer.messages else None
    return AskResponse(
        query_id=query_id,
        answer=answer.text,
        grounded=answer.grounded,
        citations=[
            CitationPublic(
                chunk_id=c.chunk_id,
                document_id=c.document_id,
                source=c.source,
                quote=c.quote,
                start=c.start,
                end=c.end,
            )
            for c in (checked.citations if checked else ())
        ],
        sentences=[
            SentencePublic(text=s.text, supported=s.supported, citations=list(s.citations))
            for s in (checked.sentences if checked else ())
        ],
        usage=UsagePublic(
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            total_tokens=answer.usage.total_tokens,
        ),
        model=answer.model,
        timings={
            **answer.timings,
            "passages_used": answer.passages_used,
            "passages_dropped": answer.passages_dropped,
        },
        debug=debug,
    )
