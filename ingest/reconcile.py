"""Keeps the vector store honest to SQL: start-up reconciliation, and the rebuild of an unreadable index.

SQL is the store of record; the vector store is a cache that must hold exactly the chunk ids SQL calls
ready. Everything here goes through the ``VectorStore`` protocol, so it works for any implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.db import documents as db_documents
from app.rag.vector_store import IndexCorruptError, VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    collection_id: int
    action: str  # "ok", "patched" or "rebuilt"
    missing: int = 0
    extra: int = 0


def reconcile_collection(
    session_factory: sessionmaker[Session], store: VectorStore, collection_id: int
) -> ReconcileReport:
    """Make the collection's vectors in the store exactly the chunk ids SQL says are ready."""
    # The store first, SQL second: a worker writes chunk rows before their vectors, so every id read here
    # already has its row in what SQL says next, and a document being ingested meanwhile is not taken for
    # extra. (Vectors added after this read and marked ready before the SQL read show as missing and are
    # added again, which is harmless: adding is idempotent.)
    try:
        held: frozenset[int] | None = store.ids(collection_id)
    except IndexCorruptError as error:
        logger.warning("rebuilding unreadable vector index of collection %s: %s", collection_id, error)
        held = None
    with session_factory() as session:
        wanted = db_documents.ready_chunk_ids(session, collection_id=collection_id)
        # Vectors of documents still being ingested (by a worker in another process) are not extra: their
        # chunk rows exist, and the worker marks them ready after writing the vectors.
        known = db_documents.chunk_ids_of_collection(session, collection_id=collection_id)
    if held is None:
        # Every chunk row, not only the ready ones: a worker ingesting a document in another process has
        # written its rows and perhaps its vectors, and will mark it ready without writing them again.
        ids, vectors = _vectors(session_factory, store, known)
        store.replace(collection_id, ids, vectors)
        logger.info("collection %s vectors rebuilt from SQL: %d", collection_id, len(ids))
        return ReconcileReport(collection_id, "rebuilt", missing=len(wanted))
    missing = wanted - held
    extra = held - known
    if not missing and not extra:
        return ReconcileReport(collection_id, "ok")
    if extra:
        store.remove(collection_id, sorted(extra))
    if missing:
        ids, vectors = _vectors(session_factory, store, missing)
        if len(ids) != len(missing):
            # Vectors lost from SQL (should not happen): nothing to rebuild them from here, say so loudly.
            logger.error(
                "collection %s: %d ready chunks have no stored vector", collection_id, len(missing) - len(ids)
            )
        store.add(collection_id, ids, vectors)
    logger.info(
        "collection %s vectors patched: %d missing added, %d extra removed",
        collection_id,
        len(missing),
        len(extra),
    )
    return ReconcileReport(collection_id, "patched", missing=len(missing), extra=len(extra))


def _vectors(
    session_factory: sessionmaker[Session], store: VectorStore, chunk_ids: Iterable[int]
) -> tuple[list[int], np.ndarray]:
    with session_factory() as session:
        blobs = db_documents.chunk_embeddings(session, chunk_ids=chunk_ids)
    ids = sorted(blobs)
    matrix = np.zeros((len(ids), store.dim), dtype=np.float32)
    for row, chunk_id in enumerate(ids):
        matrix[row] = np.frombuffer(blobs[chunk_id], dtype=np.float32)
    return ids, matrix


def reconcile_all(
    session_factory: sessionmaker[Session], store: VectorStore, *, embedding_model: str
) -> list[ReconcileReport]:
    """Reconcile every collection embedded with this server's model; others are left alone (their vectors
    have another model's dimension and meaning) and refused at query time."""
    with session_factory() as session:
        collections = db_documents.all_collections(session)
        collection_ids = [c.id for c in collections if c.embedding_model == embedding_model]
        skipped = [c.name for c in collections if c.embedding_model != embedding_model]
    if skipped:
        logger.warning("collections embedded with another model are not served: %s", ", ".join(skipped))
    return [reconcile_collection(session_factory, store, collection_id) for collection_id in collection_ids]
