"""Retrieve passages for a query."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.deps import ComponentsDep, TenantDep
from app.schemas.retrieve import RetrievedChunkPublic, RetrieveRequest, RetrieveResponse
from app.services import retrieval

router = APIRouter(tags=["retrieval"])


@router.post("/v1/retrieve", response_model=RetrieveResponse)
async def retrieve(body: RetrieveRequest, components: ComponentsDep, tenant_id: TenantDep) -> RetrieveResponse:
    """Return the passages of a collection that best match a query (hybrid dense + BM25)."""
    # Embedding and index search are CPU work: keep them off the event loop.
    spans = await run_in_threadpool(
        partial(
            retrieval.retrieve,
            components,
            tenant_id=tenant_id,
            collection=body.collection,
            query=body.query,
            top_k=body.top_k,
            mode=body.mode,
            diversify=body.diversify,
        )
    )
    return RetrieveResponse(
        chunks=[
            RetrievedChunkPublic(
                chunk_id=s.chunk_id,
                document_id=s.document_id,
                source=s.source,
                aliases=list(s.aliases),
                text=s.text,
                score=s.score,
                start=s.start,
                end=s.end,
                section=s.section,
                prior=s.prior,
                rank_shift=s.rank_shift,
            )
            for s in spans
        ]
    )
