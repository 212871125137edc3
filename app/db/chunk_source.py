"""The store of record as retrieval reads it: which chunks are ready, their lexical terms, the index version.

Implements ``app.rag.retrieval.ChunkSource`` structurally, so ``app.rag`` never imports SQL.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from app.db import documents as db_documents


class SqlChunkSource:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def index_version(self, collection_id: int) -> int:
        with self._session_factory() as session:
            return db_documents.index_version(session, collection_id=collection_id)

    def ready_chunks(self, collection_id: int) -> dict[int, int]:
        with self._session_factory() as session:
            return db_documents.ready_chunk_documents(session, collection_id=collection_id)

    def chunk_terms(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        with self._session_factory() as session:
            return db_documents.chunk_terms(session, chunk_ids=chunk_ids)
