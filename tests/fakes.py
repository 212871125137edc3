"""A fake embedder for unit and API tests: deterministic, instant, and similar for texts sharing words."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from app.rag.embedding import Vectors

_PIECE = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")


class FakeEmbedder:
    """Hashes words (and single CJK characters) into a small vector: shared words mean similar vectors."""

    name = "fake/hashing-64"
    dim = 64
    max_tokens = 512

    def __init__(self) -> None:
        self.passage_calls: list[int] = []

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for piece in _PIECE.findall(text.lower()):
            slot = (
                int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=4).digest(), "little") % self.dim
            )
            vector[slot] += 1.0
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        self.passage_calls.append(len(texts))
        return self.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return len(_PIECE.findall(text.lower())) + 2
