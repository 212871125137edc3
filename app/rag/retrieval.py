"""Hybrid retrieval: dense and lexical (BM25) candidates fused by reciprocal rank, aware of documents.

Fusion happens twice. Chunks are fused by reciprocal rank of their dense and BM25 ranks. Documents are fused
too: by the first place each takes in those two rankings, and by BM25 over the document's whole text, which
catches a question about what a document is *for* that no single chunk answers word for word. Results are
then filled diversity first: the best chunk of each document in document order, then second-best chunks,
and so on, until ``top_k``; ``max_per_document`` can narrow that further. A collection with one document
still yields ``top_k`` of its chunks. Answering asks for plain chunk order instead (``diversify=False``).

The retriever caches each collection's BM25 indexes in memory and refreshes them when the collection's
``index_version`` in the store of record moves, so a worker in another process can add documents while the
API serves; the vector store (``app.rag.vector_store``) keeps its own copy current the same way. Whatever
the caches hold, only chunks the store of record says are ready are ever returned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from app.rag.embedding import Embedder, Vectors
from app.rag.lexical import LexicalIndex, tokenize
from app.rag.priors import PriorPolicy, VoteSet, apply_priors
from app.rag.types import ScoredId
from app.rag.vector_store import IndexCorruptError, VectorStore

logger = logging.getLogger(__name__)

RetrievalMode = Literal["hybrid", "dense", "lexical"]


class ChunkSource(Protocol):
    """What retrieval needs from the store of record (implemented over SQL in ``app.db.chunk_source``)."""

    def index_version(self, collection_id: int) -> int: ...

    def ready_chunks(self, collection_id: int) -> dict[int, int]:
        """Ready chunk id → the id of its document."""
        ...

    def chunk_terms(self, chunk_ids: Iterable[int]) -> dict[int, str]: ...


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ScoredId]], *, k: int, limit: int) -> list[ScoredId]:
    """Fuse rankings by summing 1 / (k + rank); robust to the retrievers' incomparable score scales."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (k + rank)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [ScoredId(id=key, score=score) for key, score in best]


def _document_order(ranking: Sequence[ScoredId], document_of: dict[int, int]) -> list[ScoredId]:
    """A chunk ranking read as a document ranking: each document at the place of its first chunk."""
    seen: set[int] = set()
    documents = []
    for hit in ranking:
        document = document_of[hit.id]
        if document not in seen:
            seen.add(document)
            documents.append(ScoredId(id=document, score=hit.score))
    return documents


def fill_by_document(
    chunks: Sequence[ScoredId],
    documents: Sequence[ScoredId],
    document_of: dict[int, int],
    *,
    limit: int,
    max_per_document: int | None,
) -> list[ScoredId]:
    """Best chunk of each document in document order, then second-best ones, and so on, up to ``limit``."""
    per_document: dict[int, list[ScoredId]] = {}
    for hit in chunks:
        per_document.setdefault(document_of[hit.id], []).append(hit)
    order = [d.id for d in documents if d.id in per_document]
    order += [d for d in per_document if d not in set(order)]
    depth = max((len(v) for v in per_document.values()), default=0)
    if max_per_document:
        depth = min(depth, max_per_document)
    result: list[ScoredId] = []
    for level in range(depth):
        for document in order:
            candidates = per_document[document]
            if level < len(candidates):
                result.append(candidates[level])
                if len(result) == limit:
                    return result
    return result


class _CollectionVectors:
    """Dense search in one collection of the vector store, which applies other processes' changes itself.

    An unreadable index searches as empty (reported once per cache) until reconciliation rebuilds it: the
    lexical side still answers."""

    def __init__(self, store: VectorStore, collection_id: int) -> None:
        self._store = store
        self._collection_id = collection_id
        self._reported = False

    def search(self, query: Vectors, limit: int) -> list[ScoredId]:
        try:
            return self._store.search(self._collection_id, query, limit)
        except IndexCorruptError:
            self._report()
            return []

    def count(self) -> int:
        try:
            return self._store.count(self._collection_id)
        except IndexCorruptError:
            self._report()
            return 0

    def _report(self) -> None:
        if not self._reported:
            self._reported = True
            logger.exception(
                "vector index of collection %s unreadable; dense search disabled until rebuilt",
                self._collection_id,
            )


@dataclass
class _CollectionCache:
    version: int
    document_of: dict[int, int]
    document_ids: frozenset[int]
    vectors: _CollectionVectors
    lexical: LexicalIndex
    documents: LexicalIndex


class HybridRetriever:
    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorStore,
        source: ChunkSource,
        candidates: int = 50,
        rrf_k: int = 60,
        mode: RetrievalMode = "hybrid",
        prior_policy: PriorPolicy | None = None,
    ) -> None:
        self._embedder = embedder
        self._prior_policy = prior_policy or PriorPolicy()
        self._store = store
        self._source = source
        self._candidates = candidates
        self._rrf_k = rrf_k
        self._mode: RetrievalMode = mode
        self._caches: dict[int, _CollectionCache] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def search(
        self,
        collection_id: int,
        query: str,
        *,
        top_k: int,
        mode: RetrievalMode | None = None,
        diversify: bool = True,
        max_per_document: int | None = None,
        votes: VoteSet | None = None,
    ) -> list[ScoredId]:
        """Best ``top_k`` ready chunks for ``query``; blocking (embedding and search are CPU work).

        ``diversify`` fills results document by document (best chunk of each, then deeper), which is what
        finding documents wants; without it chunks come in plain fused order, which is what answering wants
        (an answer often needs several chunks of one document).

        ``votes`` (ratings of earlier answers, ``app.rag.priors``) move chunks, and with ``diversify`` their
        documents, a bounded number of places after fusion, as far as the questions voted on are this one."""
        mode = mode or self._mode
        cache = self._fresh_cache(collection_id)
        if not cache.document_of:
            return []
        # Ask for more than needed: the index file may still hold chunks SQL no longer calls ready.
        wanted = max(self._candidates, top_k)
        chunk_rankings: list[list[ScoredId]] = []
        query_vector = self._embedder.embed_queries([query])[0] if mode != "lexical" or votes else None
        if query_vector is not None and mode in ("hybrid", "dense"):
            dense = cache.vectors.search(query_vector, wanted + 16)
            chunk_rankings.append([hit for hit in dense if hit.id in cache.document_of][:wanted])
        terms = tokenize(query)
        if mode in ("hybrid", "lexical"):
            # The BM25 indexes are shared with newer caches (updated in place), so keep to this cache's ids.
            lexical = cache.lexical.search(terms, wanted + 16)
            chunk_rankings.append([hit for hit in lexical if hit.id in cache.document_of][:wanted])
        policy = self._prior_policy
        priors: dict[int, float] = {}
        if votes and query_vector is not None and policy.max_shift > 0:
            priors = {c: v for c, v in votes.net_for(query_vector, policy).items() if c in cache.document_of}
        if not diversify:
            # A chunk may rise up to max_shift places: fuse that many more, reorder, then cut.
            fused = reciprocal_rank_fusion(
                chunk_rankings, k=self._rrf_k, limit=top_k + (policy.max_shift if priors else 0)
            )
            return apply_priors(fused, priors, policy)[:top_k]
        fused_chunks = apply_priors(
            reciprocal_rank_fusion(chunk_rankings, k=self._rrf_k, limit=len(cache.document_of)), priors, policy
        )
        document_rankings = [_document_order(ranking, cache.document_of) for ranking in chunk_rankings]
        if mode in ("hybrid", "lexical"):
            whole = cache.documents.search(terms, wanted + 16)
            document_rankings.append([hit for hit in whole if hit.id in cache.document_ids][:wanted])
        fused_documents = reciprocal_rank_fusion(document_rankings, k=self._rrf_k, limit=wanted)
        if priors:
            document_priors: dict[int, float] = {}
            for chunk_id, net in priors.items():
                document = cache.document_of[chunk_id]
                document_priors[document] = document_priors.get(document, 0.0) + net
            fused_documents = apply_priors(fused_documents, document_priors, policy)
        return fill_by_document(
            fused_chunks, fused_documents, cache.document_of, limit=top_k, max_per_document=max_per_document
        )

    @property
    def embedding_model(self) -> str:
        return self._embedder.name

    def _lock_for(self, collection_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(collection_id, threading.Lock())

    def _fresh_cache(self, collection_id: int) -> _CollectionCache:
        version = self._source.index_version(collection_id)
        cache = self._caches.get(collection_id)
        if cache is not None and cache.version == version:
            return cache
        with self._lock_for(collection_id):
            cache = self._caches.get(collection_id)
            if cache is not None and cache.version == version:
                return cache
            cache = self._refresh(collection_id, version, cache)
            self._caches[collection_id] = cache
            return cache

    def _refresh(
        self, collection_id: int, version: int, previous: _CollectionCache | None
    ) -> _CollectionCache:
        document_of = self._source.ready_chunks(collection_id)
        # The store keeps its own copy current (reading only what changed), so nothing is reloaded here.
        vectors = _CollectionVectors(self._store, collection_id)
        lexical = previous.lexical if previous is not None else LexicalIndex()
        documents = previous.documents if previous is not None else LexicalIndex()
        # Apply only the difference: tokens for new chunks come from SQL, removed ones leave the postings.
        # Documents are indexed whole, so a document is re-indexed when any of its chunks changes.
        known = lexical.ids()
        gone = known - document_of.keys()
        new_ids = document_of.keys() - known
        for chunk_id in gone:
            lexical.remove(chunk_id)
        changed_documents = {previous.document_of[c] for c in gone if previous} | {
            document_of[c] for c in new_ids
        }
        members: dict[int, list[int]] = {}
        for chunk_id, document in document_of.items():
            if document in changed_documents:
                members.setdefault(document, []).append(chunk_id)
        terms_of = self._source.chunk_terms(
            new_ids | {c for chunk_ids in members.values() for c in chunk_ids}
        )
        for chunk_id in new_ids:
            lexical.add(chunk_id, terms_of.get(chunk_id, "").split())
        for document in changed_documents:
            documents.remove(document)
        for document, chunk_ids in members.items():
            documents.add(document, [t for c in sorted(chunk_ids) for t in terms_of.get(c, "").split()])
        logger.info(
            "collection %s cache at version %s: %d chunks, %d vectors, %d documents",
            collection_id,
            version,
            len(document_of),
            vectors.count(),
            len(documents),
        )
        return _CollectionCache(
            version=version,
            document_of=document_of,
            document_ids=frozenset(document_of.values()),
            vectors=vectors,
            lexical=lexical,
            documents=documents,
        )
