"""Retrieval for a request: resolve the tenant's collection, ask the retriever, hydrate hits from SQL."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db import documents as db_documents
from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.retrieval import HybridRetriever, RetrievalMode
from app.rag.types import RetrievedChunk


def retrieve(
    session: Session,
    retriever: HybridRetriever,
    *,
    tenant_id: int,
    collection_name: str,
    query: str,
    top_k: int,
    mode: RetrievalMode | None = None,
    diversify: bool = True,
) -> list[RetrievedChunk]:
    collection = db_documents.get_collection(session, tenant_id=tenant_id, name=collection_name)
    if collection is None:
        raise NotFoundError(f"collection {collection_name!r} not found", param="collection")
    if collection.embedding_model != retriever.embedding_model:
        raise InvalidInputError(
            f"collection {collection_name!r} was embedded with {collection.embedding_model}, but this server "
            f"runs {retriever.embedding_model}; re-ingest it or serve it with that model",
            param="collection",
        )
    collection_id = collection.id
    # End the read transaction (and give its connection back) before searching: the retriever opens sessions
    # of its own, and threads each holding one connection while waiting for a second exhausted the pool under
    # 32 concurrent requests (bench/ask.py).
    session.rollback()
    hits = retriever.search(collection_id, query, top_k=top_k, mode=mode, diversify=diversify)
    rows = db_documents.ready_chunks_by_id(
        session, tenant_id=tenant_id, collection_id=collection_id, chunk_ids=[h.chunk_id for h in hits]
    )
    results = []
    for hit in hits:
        if hit.chunk_id not in rows:  # deleted between search and hydration
            continue
        chunk, document = rows[hit.chunk_id]
        results.append(
            RetrievedChunk(
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                source=document.filename,
                aliases=tuple(document.aliases or ()),
                text=chunk.text,
                score=hit.score,
                start=chunk.start,
                end=chunk.end,
                section=chunk.section,
            )
        )
    return results
