"""The ask use case: one collection, one question, the one answer flow, every answer recorded.

``/v1/ask``, ``/v1/chat/completions``, ``wenda ask`` and ``wenda eval answers`` all call ``start_answer``:
it checks the request, resolves the collection once, and runs everything before generation, so that errors
reach a streaming caller before its first byte. ``StartedAnswer.events`` then streams; ``result`` drains.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial

from starlette.concurrency import run_in_threadpool

from app.components import Components
from app.rag.answering import Answer, AnswerFlow, AnswerRequest, PreparedAnswer, Retrieve
from app.rag.errors import InvalidInputError
from app.rag.evidence import DocumentSpan
from app.rag.llm import GenerationParams
from app.rag.types import ChatMessage
from app.services.queries import AnswerContext
from app.services.retrieval import CollectionRef, check_top_k, resolve_collection, search_collection


@dataclass(frozen=True)
class AskInput:
    """A question as any caller gives it; ``None`` means the server's default."""

    collection: str
    question: str
    model: str | None = None
    template: str = "qa"
    top_k: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    history: tuple[ChatMessage, ...] = ()
    timezone: str | None = None  # IANA name; None: the server's facts.default_timezone
    compare: bool = False  # adapter and base model answer at once (not streamed)
    stream: bool = False


@dataclass(frozen=True)
class StartedAnswer:
    query_id: str
    prepared: PreparedAnswer
    flow: AnswerFlow

    def events(self) -> AsyncIterator[str | Answer]:
        """Text deltas as the model writes them, then the checked ``Answer``; closing it early cancels the
        generation and records the answer as cancelled."""
        return self.flow.stream(self.prepared)

    async def result(self) -> Answer:
        """The checked answer in one piece (the backend's non-streaming call)."""
        return await self.flow.complete(self.prepared)


def new_query_id() -> str:
    return uuid.uuid4().hex


def answer_request(components: Components, ask: AskInput) -> AnswerRequest:
    """Defaults filled in and limits checked; an unknown template is a 404 before any work."""
    settings = components.settings
    template = components.prompts.requested(ask.template)
    if ask.compare and ask.stream:
        raise InvalidInputError(
            "compare answers with two models and keeps one: it cannot be streamed", param="compare"
        )
    return AnswerRequest(
        question=ask.question,
        model=ask.model,
        template=template.name,
        top_k=check_top_k(components, ask.top_k, default=settings.retrieval.answer_top_k),
        params=GenerationParams(
            temperature=0.0 if ask.temperature is None else ask.temperature,
            top_p=1.0 if ask.top_p is None else ask.top_p,
            max_tokens=ask.max_tokens or settings.llm.max_tokens,
            stop=template.stop,
        ),
        history=ask.history,
        timezone=ask.timezone,
        compare=ask.compare,
    )


async def start_answer(
    components: Components, *, tenant_id: int, ask: AskInput, endpoint: str
) -> StartedAnswer:
    request = answer_request(components, ask)
    collection = await run_in_threadpool(
        partial(_resolve_for_answer, components, tenant_id=tenant_id, name=ask.collection)
    )
    request = replace(request, default_model=collection.default_model)
    query_id = new_query_id()
    context = AnswerContext(
        query_id=query_id,
        tenant_id=tenant_id,
        collection_id=collection.id,
        collection_name=collection.name,
        endpoint=endpoint,
    )
    flow = AnswerFlow(
        llm=components.llm,
        prompts=components.prompts,
        retrieve=_retriever(components, tenant_id=tenant_id, collection=collection),
        policy=components.refusal_policy,
        sources=(components.corrections.source(collection.id), *components.evidence_sources),
        record=partial(components.answer_log.record, context),
        router=components.router,
        facts=components.facts,
    )
    return StartedAnswer(query_id=query_id, prepared=await flow.prepare(request), flow=flow)


def _resolve_for_answer(components: Components, *, tenant_id: int, name: str) -> CollectionRef:
    """The collection, and the adapter list read again if it is older than models.registry_refresh_seconds
    (both blocking, both before the first byte)."""
    components.adapters.refresh()
    return resolve_collection(components, tenant_id=tenant_id, name=name)


def _retriever(components: Components, *, tenant_id: int, collection: CollectionRef) -> Retrieve:
    async def retrieve(question: str, top_k: int) -> list[DocumentSpan]:
        # Embedding and search are CPU work: off the event loop (anyio's pool, as every blocking route uses).
        # Answers want plain passage order: an answer often needs several passages of one document.
        return await run_in_threadpool(
            partial(
                search_collection,
                components,
                tenant_id=tenant_id,
                collection=collection,
                query=question,
                top_k=top_k,
                diversify=False,
            )
        )

    return retrieve
