"""The FAISS store shared by processes: concurrent writers with compactions, and writers killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from app.rag.faiss_store import FaissVectorStore

ROOT = Path(__file__).resolve().parents[2]
DIM = 16
CHUNKS = 5  # per document; document n holds ids n * 100 .. n * 100 + 4

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np

    from app.rag.faiss_store import FaissVectorStore

    directory, first, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # Tiny thresholds: compactions (in the background) all the time, racing the other writer's appends.
    store = FaissVectorStore(directory, dim=16, compact_min_bytes=2048, compact_share=0.25)
    for n in range(first, last):
        ids = [n * 100 + i for i in range(5)]
        vectors = np.stack([np.random.default_rng(i).standard_normal(16) for i in ids]).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add(1, ids, vectors)
        if n % 7 == 0:
            store.remove(1, [n * 100 + 4])
            store.add(1, [n * 100 + 4], vectors[4:])  # the same vector again
        print(n, flush=True)
    store.close()
    """
)


def _vector(chunk_id: int) -> np.ndarray:
    vector = np.random.default_rng(chunk_id).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _writer(script: Path, directory: Path, first: int, last: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(directory), str(first), str(last)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )


def _expected(documents: range) -> frozenset[int]:
    return frozenset(n * 100 + i for n in documents for i in range(CHUNKS))


def _assert_vectors_are_right(store: FaissVectorStore, ids: frozenset[int]) -> None:
    for chunk_id in sorted(ids)[:: max(1, len(ids) // 40)]:
        query = _vector(chunk_id)
        hit = store.search(1, query, 1)[0]
        assert hit.id == chunk_id and np.isclose(hit.score, 1.0, rtol=1e-4)


def test_concurrent_writers_and_a_reader_agree(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    directory = tmp_path / "indexes"
    reader = FaissVectorStore(directory, dim=DIM)
    writers = [_writer(script, directory, 0, 80), _writer(script, directory, 1000, 1080)]
    polls = 0
    while any(w.poll() is None for w in writers):
        # Catching up while the others append and compact: every document is whole (an add is one record),
        # or lacks only the chunk that its writer removes and adds again.
        documents: dict[int, set[int]] = {}
        for chunk_id in reader.ids(1):
            documents.setdefault(chunk_id // 100, set()).add(chunk_id % 100)
        assert all(
            chunks == set(range(CHUNKS)) or (n % 7 == 0 and chunks == set(range(CHUNKS - 1)))
            for n, chunks in documents.items()
        ), documents
        polls += 1
        time.sleep(0.01)
    assert polls > 5
    assert [w.returncode for w in writers] == [0, 0]
    expected = _expected(range(80)) | _expected(range(1000, 1080))
    assert reader.ids(1) == expected
    fresh = FaissVectorStore(directory, dim=DIM)
    assert fresh.ids(1) == expected and fresh.count(1) == len(expected)
    assert fresh.path(1).exists()  # compactions happened
    _assert_vectors_are_right(fresh, expected)
    assert sorted(p.name for p in directory.iterdir() if "tmp" in p.name) == []


def test_a_writer_killed_anywhere_leaves_a_loadable_store_with_every_acknowledged_add(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    directory = tmp_path / "indexes"
    rng = random.Random(20261122)
    acknowledged = 0
    for _ in range(4):
        writer = _writer(script, directory, acknowledged, acknowledged + 10_000)
        assert writer.stdout is not None
        first = writer.stdout.readline()  # started (imports take a while on a busy machine)
        time.sleep(rng.uniform(0.05, 0.8))
        writer.send_signal(signal.SIGKILL)
        output, _ = writer.communicate()
        done = [int(line) for line in (first + output).split()]
        acknowledged = done[-1] + 1
        store = FaissVectorStore(directory, dim=DIM)
        held = store.ids(1)
        # Everything acknowledged is there, and besides at most some of the document in flight, which the
        # next writer writes again from the start, as a re-run job does.
        assert _expected(range(acknowledged)) <= held
        assert held - _expected(range(acknowledged)) <= _expected(range(acknowledged, acknowledged + 1))
        _assert_vectors_are_right(store, held)
        store.close()
