"""FAISS indexes on disk, one per collection: a cache of the vectors SQL holds, never the truth.

Each index is an ``IndexIDMap2`` over inner-product search keyed by chunk id, written with
``faiss.write_index`` to a temporary file and renamed into place, so a reader sees the old file or the new
one and never half of either. Writers in any process serialise on a per-collection lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.rag.embedding import Vectors
from app.rag.types import ScoredId

logger = logging.getLogger(__name__)


class IndexCorruptError(Exception):
    pass


def set_faiss_threads(threads: int) -> None:
    faiss.omp_set_num_threads(threads)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndexStore:
    def __init__(self, directory: Path, *, dim: int) -> None:
        self._directory = directory
        self._dim = dim
        self._thread_locks: dict[int, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def dim(self) -> int:
        return self._dim

    def path(self, collection_id: int) -> Path:
        return self._directory / f"collection-{collection_id}.faiss"

    def new_index(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))

    def load(self, collection_id: int) -> Any | None:
        """The collection's index from disk, or None if it has none; IndexCorruptError if unreadable."""
        path = self.path(collection_id)
        if not path.exists():
            return None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise IndexCorruptError(f"{path}: {error}") from error
        if index.d != self._dim:
            raise IndexCorruptError(f"{path}: dimension {index.d}, expected {self._dim}")
        return index

    def write(self, collection_id: int, index: Any) -> None:
        path = self.path(collection_id)
        temporary = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
        faiss.write_index(index, str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    @contextlib.contextmanager
    def locked(self, collection_id: int) -> Iterator[None]:
        """Exclusive access to one collection's file, across threads and processes."""
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(collection_id, threading.Lock())
        with thread_lock, open(self._directory / f"collection-{collection_id}.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def upsert(self, collection_id: int, ids: list[int], vectors: Vectors) -> None:
        """Put these vectors in under these ids, replacing any earlier ones with the same ids.

        Raises IndexCorruptError for an unreadable file rather than starting over with only these vectors:
        the caller rebuilds the index from SQL first."""
        with self.locked(collection_id):
            index = self.load(collection_id) or self.new_index()
            id_array = np.asarray(ids, dtype=np.int64)
            index.remove_ids(id_array)
            if len(ids):
                index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), id_array)
            self.write(collection_id, index)

    def remove(self, collection_id: int, ids: Iterable[int]) -> None:
        id_array = np.asarray(list(ids), dtype=np.int64)
        with self.locked(collection_id):
            index = self.load(collection_id) if self.path(collection_id).exists() else None
            if index is None:
                return
            index.remove_ids(id_array)
            self.write(collection_id, index)

    def build(self, ids: list[int], vectors: Vectors) -> Any:
        """A new index holding exactly these vectors under these ids."""
        index = self.new_index()
        if ids:
            index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )
        return index

    def rebuild(self, collection_id: int, ids: list[int], vectors: Vectors) -> None:
        with self.locked(collection_id):
            self.write(collection_id, self.build(ids, vectors))


def stored_ids(index: Any) -> list[int]:
    """The chunk ids an ``IndexIDMap2`` holds."""
    return [int(i) for i in faiss.vector_to_array(index.id_map)]


class VectorSearcher:
    """A loaded index ready for search; moved to the GPU when faiss-gpu sees one."""

    def __init__(self, index: Any) -> None:
        self._size = int(index.ntotal)
        self._resources = None
        if gpu_available() and self._size:
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
        self._index = index

    def __len__(self) -> int:
        return self._size

    def search(self, query: Vectors, limit: int) -> list[ScoredId]:
        if self._size == 0:
            return []
        scores, ids = self._index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), limit)
        return [
            ScoredId(chunk_id=int(i), score=float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i != -1
        ]
