"""Retrieve passages for a query."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app import search
from app.deps import ServicesDep, SessionDep, TenantDep
from app.rag.errors import InvalidInputError
from app.schemas.retrieve import RetrievedChunkPublic, RetrieveRequest, RetrieveResponse

router = APIRouter(tags=["retrieval"])


@router.post("/v1/retrieve", response_model=RetrieveResponse)
async def retrieve(
    body: RetrieveRequest, session: SessionDep, tenant_id: TenantDep, services: ServicesDep
) -> RetrieveResponse:
    """Return the passages of a collection that best match a query (hybrid dense + BM25)."""
    config = services.settings.retrieval
    top_k = body.top_k or config.default_top_k
    if top_k > config.max_top_k:
        raise InvalidInputError(f"top_k must be at most {config.max_top_k}", param="top_k")
    # Embedding and index search are CPU work: keep them off the event loop.
    chunks = await run_in_threadpool(
        search.retrieve,
        session,
        services.retriever,
        tenant_id=tenant_id,
        collection_name=body.collection,
        query=body.query,
        top_k=top_k,
        mode=body.mode,
        diversify=config.diversify if body.diversify is None else body.diversify,
    )
    return RetrieveResponse(
        chunks=[
            RetrievedChunkPublic(
                chunk_id=c.chunk_id,
                document_id=c.document_id,
                source=c.source,
                aliases=list(c.aliases),
                text=c.text,
                score=c.score,
                start=c.start,
                end=c.end,
                section=c.section,
            )
            for c in chunks
        ]
    )
