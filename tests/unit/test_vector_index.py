"""Real FAISS on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.rag.vector_index import IndexCorruptError, VectorIndexStore, VectorSearcher, stored_ids


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_upsert_is_idempotent_and_search_finds_the_vector(tmp_path: Path) -> None:
    store = VectorIndexStore(tmp_path, dim=16)
    vectors = _unit(10, 16, seed=1)
    ids = [100 + i for i in range(10)]
    store.upsert(1, ids, vectors)
    store.upsert(1, ids, vectors)  # a re-run job writes the same ids again
    index = store.load(1)
    assert sorted(stored_ids(index)) == ids
    hits = VectorSearcher(index).search(vectors[3], 3)
    assert hits[0].chunk_id == 103
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_remove_and_no_temporary_files_left(tmp_path: Path) -> None:
    store = VectorIndexStore(tmp_path, dim=8)
    store.upsert(2, [1, 2, 3], _unit(3, 8, seed=2))
    store.remove(2, [2])
    assert sorted(stored_ids(store.load(2))) == [1, 3]
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    store = VectorIndexStore(tmp_path, dim=8)
    store.path(3).write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorruptError):
        store.load(3)
    assert store.load(4) is None


def test_upsert_refuses_to_overwrite_an_unreadable_index(tmp_path: Path) -> None:
    store = VectorIndexStore(tmp_path, dim=8)
    store.path(5).write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorruptError):
        store.upsert(5, [1], _unit(1, 8, seed=3))
