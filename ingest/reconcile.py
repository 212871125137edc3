"""Keeps the vector index honest to SQL: start-up reconciliation, and the rebuild of an unreadable index.

SQL is the store of record; the index is a cache that must hold exactly the chunk ids SQL calls ready.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.db import documents as db_documents
from app.rag.vector_index import IndexCorruptError, VectorIndexStore, stored_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    collection_id: int
    action: str  # "ok", "patched" or "rebuilt"
    missing: int = 0
    extra: int = 0


def reconcile_collection(
    session_factory: sessionmaker[Session], store: VectorIndexStore, collection_id: int
) -> ReconcileReport:
    """Make the collection's FAISS file hold exactly the chunk ids SQL says are ready."""
    with session_factory() as session:
        wanted = db_documents.ready_chunk_ids(session, collection_id=collection_id)
        # Vectors of documents still being ingested (by a worker in another process) are not extra: their
        # chunk rows exist, and the worker marks them ready after writing the index.
        known = db_documents.chunk_ids_of_collection(session, collection_id=collection_id)
    with store.locked(collection_id):
        try:
            index = store.load(collection_id)
        except IndexCorruptError as error:
            logger.warning("rebuilding corrupt index: %s", error)
            index = None
        if index is None:
            _rebuild(session_factory, store, collection_id, wanted)
            return ReconcileReport(collection_id, "rebuilt", missing=len(wanted))
        held = stored_ids(index)
        if len(held) != len(set(held)):
            _rebuild(session_factory, store, collection_id, wanted)
            return ReconcileReport(collection_id, "rebuilt", missing=len(wanted))
        missing = wanted - set(held)
        extra = set(held) - known
        if not missing and not extra:
            return ReconcileReport(collection_id, "ok")
        if extra:
            index.remove_ids(np.asarray(sorted(extra), dtype=np.int64))
        if missing:
            ids, vectors = _vectors(session_factory, store, missing)
            if len(ids) != len(missing):
                # Vectors lost from SQL (should not happen): nothing to rebuild them from here, say so loudly.
                logger.error(
                    "collection %s: %d ready chunks have no stored vector",
                    collection_id,
                    len(missing) - len(ids),
                )
            if ids:
                index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        store.write(collection_id, index)
    logger.info(
        "collection %s index patched: %d missing added, %d extra removed",
        collection_id,
        len(missing),
        len(extra),
    )
    return ReconcileReport(collection_id, "patched", missing=len(missing), extra=len(extra))


def _vectors(
    session_factory: sessionmaker[Session], store: VectorIndexStore, chunk_ids: Iterable[int]
) -> tuple[list[int], np.ndarray]:
    with session_factory() as session:
        blobs = db_documents.chunk_embeddings(session, chunk_ids=chunk_ids)
    ids = sorted(blobs)
    matrix = np.zeros((len(ids), store.dim), dtype=np.float32)
    for row, chunk_id in enumerate(ids):
        matrix[row] = np.frombuffer(blobs[chunk_id], dtype=np.float32)
    return ids, matrix


def _rebuild(
    session_factory: sessionmaker[Session], store: VectorIndexStore, collection_id: int, wanted: set[int]
) -> None:
    # Called with the collection's lock held: write directly rather than through store.rebuild().
    ids, vectors = _vectors(session_factory, store, wanted)
    store.write(collection_id, store.build(ids, vectors))
    logger.info("collection %s index rebuilt from SQL with %d vectors", collection_id, len(ids))


def reconcile_all(
    session_factory: sessionmaker[Session], store: VectorIndexStore, *, embedding_model: str
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
