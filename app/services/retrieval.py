"""Retrieval for a caller: resolve the tenant's collection once, ask the retriever, hydrate hits from SQL."""

from __future__ import annotations

from dataclasses import dataclass

from app import metrics
from app.components import Components
from app.db import documents as db_documents
from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.evidence import DocumentSpan
from app.rag.retrieval import RetrievalMode


@dataclass(frozen=True)
class CollectionRef:
    id: int
    name: str
    default_model: str | None = None


def resolve_collection(components: Components, *, tenant_id: int, name: str) -> CollectionRef:
    """The tenant's collection by name, checked to be servable by this server's embedder (blocking)."""
    with components.session_factory() as session:
        collection = db_documents.get_collection(session, tenant_id=tenant_id, name=name)
        if collection is None:
            raise NotFoundError(f"collection {name!r} not found", param="collection")
        if collection.embedding_model != components.retriever.embedding_model:
            raise InvalidInputError(
                f"collection {name!r} was embedded with {collection.embedding_model}, but this server runs "
                f"{components.retriever.embedding_model}; re-ingest it or serve it with that model",
                param="collection",
            )
        return CollectionRef(id=collection.id, name=collection.name, default_model=collection.default_model)


def check_top_k(components: Components, top_k: int | None, *, default: int) -> int:
    limit = components.settings.retrieval.max_top_k
    top_k = top_k or default
    if top_k > limit:
        raise InvalidInputError(f"top_k must be at most {limit}", param="top_k")
    return top_k


def search_collection(
    components: Components,
    *,
    tenant_id: int,
    collection: CollectionRef,
    query: str,
    top_k: int,
    mode: RetrievalMode | None = None,
    diversify: bool = True,
) -> list[DocumentSpan]:
    """Best passages of a resolved collection (blocking: embedding and search are CPU work)."""
    # No session is held while searching: the retriever opens its own, and threads each holding one while
    # waiting for a second exhausted the pool under 32 concurrent requests (bench/ask.py).
    hits = components.retriever.search(
        collection.id,
        query,
        top_k=top_k,
        mode=mode,
        diversify=diversify,
        votes=components.ratings.votes(collection.id),
    )
    with components.session_factory() as session:
        rows = db_documents.ready_chunks_by_id(
            session, tenant_id=tenant_id, collection_id=collection.id, chunk_ids=[h.id for h in hits]
        )
    spans = []
    for hit in hits:
        if hit.id not in rows:  # deleted between search and hydration
            continue
        chunk, document = rows[hit.id]
        spans.append(
            DocumentSpan(
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                source=document.filename,
                aliases=tuple(document.aliases or ()),
                text=chunk.text,
                score=hit.score,
                start=chunk.start,
                end=chunk.end,
                section=chunk.section,
                prior=hit.prior,
                rank_shift=hit.shift,
            )
        )
    return spans


def retrieve(
    components: Components,
    *,
    tenant_id: int,
    collection: str,
    query: str,
    top_k: int | None = None,
    mode: RetrievalMode | None = None,
    diversify: bool | None = None,
) -> list[DocumentSpan]:
    """The ``/v1/retrieve`` use case (blocking)."""
    config = components.settings.retrieval
    top_k = check_top_k(components, top_k, default=config.default_top_k)
    ref = resolve_collection(components, tenant_id=tenant_id, name=collection)
    with metrics.RETRIEVAL_SECONDS.labels("retrieve").time():
        return search_collection(
            components,
            tenant_id=tenant_id,
            collection=ref,
            query=query,
            top_k=top_k,
            mode=mode,
            diversify=config.diversify if diversify is None else diversify,
        )
