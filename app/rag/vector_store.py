"""What wenda needs from a vector store: chunk vectors per collection, searched by inner product.

The store is a cache of the vectors SQL holds, never the truth: start-up reconciliation
(``ingest.reconcile``) makes each collection hold exactly the chunk ids SQL calls ready, through this
protocol alone. ``app.rag.faiss_store`` is the implementation on local disk; a distributed engine is
another class with these methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from app.rag.embedding import Vectors
from app.rag.types import ScoredId


class IndexCorruptError(Exception):
    """A collection's stored vectors cannot be read; ``replace`` them with what SQL holds."""


class VectorStore(Protocol):
    """Vectors keyed by chunk id, one namespace per collection.

    A change returns once it is durable, and every instance of the store (in this process or another)
    sees it from its next call on. Any method may raise ``IndexCorruptError``."""

    @property
    def dim(self) -> int: ...

    def add(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        """Store these vectors under these ids, replacing any held under the same ids (a re-run job
        writes the same ids again and must not duplicate them)."""
        ...

    def remove(self, collection_id: int, ids: Iterable[int]) -> None:
        """Forget these ids; ids the collection does not hold are ignored."""
        ...

    def replace(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        """Make the collection hold exactly these vectors, whatever it held before (also when unreadable)."""
        ...

    def search(self, collection_id: int, query: Vectors, limit: int) -> list[ScoredId]:
        """The ``limit`` ids whose vectors have the highest inner product with ``query``, best first."""
        ...

    def count(self, collection_id: int) -> int: ...

    def ids(self, collection_id: int) -> frozenset[int]: ...

    def close(self) -> None:
        """Finish background work (a compaction) and release what the store holds open."""
        ...
