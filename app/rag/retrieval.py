"""Hybrid retrieval: dense (FAISS) and lexical (BM25) candidates fused by reciprocal rank.

The retriever caches each collection's indexes in memory and refreshes them when the collection's
``index_version`` in the store of record moves, so a worker in another process can add documents while the
API serves. Whatever the cache holds, only chunks the store says are ready are ever returned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from app.rag.embedding import Embedder
from app.rag.lexical import LexicalIndex, tokenize
from app.rag.types import ScoredId
from app.rag.vector_index import IndexCorruptError, VectorIndexStore, VectorSearcher

logger = logging.getLogger(__name__)

RetrievalMode = Literal["hybrid", "dense", "lexical"]


class ChunkSource(Protocol):
    """What retrieval needs from the store of record (implemented over SQL in ``app.search_index``)."""

    def index_version(self, collection_id: int) -> int: ...

    def ready_chunk_ids(self, collection_id: int) -> set[int]: ...

    def chunk_terms(self, chunk_ids: Iterable[int]) -> dict[int, str]: ...


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ScoredId]], *, k: int, limit: int) -> list[ScoredId]:
    """Fuse rankings by summing 1 / (k + rank); robust to the retrievers' incomparable score scales."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [ScoredId(chunk_id=chunk_id, score=score) for chunk_id, score in best]


@dataclass
class _CollectionCache:
    version: int
    ready_ids: set[int]
    vectors: VectorSearcher
    lexical: LexicalIndex


class HybridRetriever:
    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorIndexStore,
        source: ChunkSource,
        candidates: int = 50,
        rrf_k: int = 60,
        mode: RetrievalMode = "hybrid",
    ) -> None:
        self._embedder = embedder
        self._store = store
        self._source = source
        self._candidates = candidates
        self._rrf_k = rrf_k
        self._mode: RetrievalMode = mode
        self._caches: dict[int, _CollectionCache] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def search(
        self, collection_id: int, query: str, *, top_k: int, mode: RetrievalMode | None = None
    ) -> list[ScoredId]:
        """Best ``top_k`` ready chunks for ``query``; blocking (embedding and search are CPU work)."""
        mode = mode or self._mode
        cache = self._fresh_cache(collection_id)
        if not cache.ready_ids:
            return []
        # Ask for more than needed: the index file may still hold chunks SQL no longer calls ready.
        wanted = max(self._candidates, top_k)
        rankings: list[list[ScoredId]] = []
        if mode in ("hybrid", "dense"):
            query_vector = self._embedder.embed_queries([query])[0]
            dense = cache.vectors.search(query_vector, wanted + 16)
            rankings.append([hit for hit in dense if hit.chunk_id in cache.ready_ids][:wanted])
        if mode in ("hybrid", "lexical"):
            rankings.append(cache.lexical.search(tokenize(query), wanted))
        if len(rankings) == 1:
            return rankings[0][:top_k]
        return reciprocal_rank_fusion(rankings, k=self._rrf_k, limit=top_k)

    def invalidate(self, collection_id: int) -> None:
        self._caches.pop(collection_id, None)

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
        ready_ids = self._source.ready_chunk_ids(collection_id)
        try:
            index = self._store.load(collection_id)
        except IndexCorruptError:
            logger.exception(
                "vector index of collection %s unreadable; dense search disabled until rebuilt", collection_id
            )
            index = None
        vectors = VectorSearcher(index if index is not None else self._store.new_index())
        lexical = previous.lexical if previous is not None else LexicalIndex()
        # Apply only the difference: tokens for new chunks come from SQL, removed ones leave the postings.
        for gone in lexical.ids() - ready_ids:
            lexical.remove(gone)
        new_ids = ready_ids - lexical.ids()
        for chunk_id, terms in self._source.chunk_terms(new_ids).items():
            lexical.add(chunk_id, terms.split())
        logger.info(
            "collection %s cache at version %s: %d chunks, %d vectors",
            collection_id,
            version,
            len(ready_ids),
            len(vectors),
        )
        return _CollectionCache(version=version, ready_ids=ready_ids, vectors=vectors, lexical=lexical)
