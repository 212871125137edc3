"""The FAISS vector store on disk: the protocol's behaviour, the delta log, compaction and recovery."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from app.rag import delta_log, faiss_store
from app.rag.faiss_store import FaissVectorStore, stored_ids
from app.rag.retrieval import HybridRetriever
from app.rag.vector_store import IndexCorruptError, VectorStore
from tests.fakes import FakeEmbedder

DIM = 8


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def _store(directory: Path, **options: Any) -> FaissVectorStore:
    options.setdefault("compact_in_background", False)
    return FaissVectorStore(directory, dim=DIM, **options)


@pytest.fixture
def snapshot_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every base snapshot read: a reader that applies a delta reads none."""
    reads: list[str] = []
    read_index = faiss.read_index

    def counting(path: str, *args: Any) -> Any:
        reads.append(path)
        return read_index(path, *args)

    monkeypatch.setattr(faiss, "read_index", counting)
    yield reads


@pytest.fixture
def decoded_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many log bytes each read handed to the decoder."""
    sizes: list[int] = []
    decode = delta_log.decode_records

    def counting(data: bytes, *, dim: int) -> tuple[list[delta_log.LogRecord], int]:
        sizes.append(len(data))
        return decode(data, dim=dim)

    monkeypatch.setattr(delta_log, "decode_records", counting)
    return sizes


def test_add_search_count_ids_remove(tmp_path: Path) -> None:
    store: VectorStore = _store(tmp_path)
    vectors = _unit(10, DIM, seed=1)
    ids = [100 + i for i in range(10)]
    store.add(1, ids, vectors)
    assert store.count(1) == 10 and store.ids(1) == frozenset(ids)
    hits = store.search(1, vectors[3], 3)
    assert hits[0].id == 103 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    store.remove(1, [103, 999])
    assert store.count(1) == 9 and 103 not in store.ids(1)
    assert all(hit.id != 103 for hit in store.search(1, vectors[3], 10))
    # Collections are separate namespaces; an unknown one is empty and gets no files.
    assert store.count(2) == 0 and store.search(2, vectors[0], 5) == [] and store.ids(2) == frozenset()
    store.remove(2, [1])
    assert not list(tmp_path.glob("collection-2.faiss")) and not list(tmp_path.glob("collection-2.log"))


def test_add_is_an_idempotent_upsert_by_id(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vectors = _unit(4, DIM, seed=2)
    store.add(1, [1, 2, 3], vectors[:3])
    store.add(1, [1, 2, 3], vectors[:3])  # a re-run job writes the same ids again
    assert store.count(1) == 3
    store.add(1, [2], vectors[3:4])  # and the same id with a new vector replaces the old one
    assert store.count(1) == 3
    assert store.search(1, vectors[3], 1)[0].id == 2
    assert sorted(stored_ids(store.load(1))) == [1, 2, 3]
    with pytest.raises(ValueError, match="repeat"):
        store.add(1, [5, 5], vectors[:2])
    with pytest.raises(ValueError):
        store.add(1, [5], vectors[:2])


def test_what_was_written_survives_reopening(tmp_path: Path) -> None:
    vectors = _unit(30, DIM, seed=3)
    writer = _store(tmp_path)
    writer.add(7, list(range(20)), vectors[:20])
    writer.remove(7, [0, 1])
    assert writer.compact(7) is not None
    writer.add(7, list(range(20, 30)), vectors[20:])
    writer.remove(7, [29])
    writer.close()
    reopened = _store(tmp_path)
    assert reopened.ids(7) == frozenset(range(2, 29))
    assert reopened.search(7, vectors[25], 1)[0].id == 25
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_bytes_written_per_add_do_not_depend_on_the_collection(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add(1, list(range(5000)), _unit(5000, DIM, seed=4))
    store.compact(1)
    log = store.log_path(1)
    before = log.stat().st_size
    store.add(1, [9000, 9001], _unit(2, DIM, seed=5))
    record = len(delta_log.encode_add(np.array([1, 2], dtype=np.int64), _unit(2, DIM, seed=5)))
    assert log.stat().st_size - before == record
    assert store.path(1).stat().st_size > 100 * record  # the snapshot was not rewritten


def test_a_second_instance_applies_another_writers_delta_without_reloading(
    tmp_path: Path, snapshot_reads: list[str], decoded_bytes: list[int]
) -> None:
    vectors = _unit(50, DIM, seed=6)
    writer = _store(tmp_path)
    reader = _store(tmp_path)
    writer.add(1, list(range(40)), vectors[:40])
    writer.compact(1)
    assert reader.count(1) == 40
    assert len(snapshot_reads) == 1  # the reader's first load
    decoded_bytes.clear()
    writer.add(1, [40, 41], vectors[40:42])
    writer.remove(1, [0])
    hits = reader.search(1, vectors[41], 1)
    assert hits[0].id == 41 and reader.ids(1) == frozenset(range(1, 42))
    assert len(snapshot_reads) == 1
    # Only the two new records were read, not the log from its start.
    added = delta_log.encode_add(np.array([40, 41], dtype=np.int64), vectors[40:42])
    removed = delta_log.encode_remove(np.array([0], dtype=np.int64))
    assert sum(decoded_bytes) == len(added) + len(removed)

    # A compaction elsewhere: the reader finishes the old log and goes on in the new one, still no reload.
    writer.add(1, [42], vectors[42:43])
    writer.compact(1)
    writer.add(1, [43], vectors[43:44])
    assert reader.ids(1) == frozenset(range(1, 44))
    assert len(snapshot_reads) == 1
    assert reader.search(1, vectors[43], 1)[0].id == 43


def test_a_replace_elsewhere_makes_readers_reload(tmp_path: Path, snapshot_reads: list[str]) -> None:
    vectors = _unit(10, DIM, seed=7)
    writer = _store(tmp_path)
    reader = _store(tmp_path)
    writer.add(1, list(range(5)), vectors[:5])
    assert reader.count(1) == 5
    writer.replace(1, [7, 8], vectors[7:9])
    assert reader.ids(1) == frozenset({7, 8})
    assert len(snapshot_reads) == 1
    writer.add(1, [9], vectors[9:10])
    assert reader.ids(1) == frozenset({7, 8, 9})


def test_a_torn_tail_is_ignored_then_truncated_by_the_next_writer(tmp_path: Path) -> None:
    vectors = _unit(6, DIM, seed=8)
    writer = _store(tmp_path)
    writer.add(3, [1, 2], vectors[:2])
    writer.add(3, [3], vectors[2:3])
    log = writer.log_path(3)
    intact = log.stat().st_size
    # A writer killed halfway through its append: half a record at the end.
    torn = delta_log.encode_add(np.array([4], dtype=np.int64), vectors[3:4])
    with open(log, "ab") as handle:
        handle.write(torn[: len(torn) // 2])
    reader = _store(tmp_path)
    assert reader.ids(3) == frozenset({1, 2, 3})
    assert _store(tmp_path).load(3) is not None
    # A whole record whose checksum fails reads as torn too.
    with open(log, "r+b") as handle:
        handle.truncate(intact)
        handle.seek(intact)
        handle.write(torn[:-1] + bytes([torn[-1] ^ 0xFF]))
    assert _store(tmp_path).ids(3) == frozenset({1, 2, 3})

    other_writer = _store(tmp_path)
    other_writer.add(3, [5], vectors[4:5])
    assert reader.ids(3) == frozenset({1, 2, 3, 5})
    assert _store(tmp_path).ids(3) == frozenset({1, 2, 3, 5})
    records, used = delta_log.decode_records(log.read_bytes()[delta_log.HEADER_SIZE :], dim=DIM)
    assert len(records) == 3 and used == log.stat().st_size - delta_log.HEADER_SIZE


def test_a_crash_between_the_compaction_renames_leaves_a_correct_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = _unit(10, DIM, seed=9)
    writer = _store(tmp_path)
    writer.add(1, [1, 2, 3], vectors[:3])
    writer.remove(1, [2])
    writer.add(1, [2], vectors[3:4])

    def rename_the_snapshot_only(
        self: FaissVectorStore,
        collection_id: int,
        header: delta_log.LogHeader,
        records: bytes,
        *,
        purpose: str,
    ) -> None:
        self._temporary(self.path(collection_id), purpose).replace(self.path(collection_id))
        raise RuntimeError("killed")

    monkeypatch.setattr(FaissVectorStore, "_install_files", rename_the_snapshot_only)
    with pytest.raises(RuntimeError, match="killed"):
        writer.compact(1)
    monkeypatch.undo()
    # New snapshot, old log: replaying the log over a state that already holds it changes nothing.
    fresh = _store(tmp_path)
    assert fresh.ids(1) == frozenset({1, 2, 3})
    assert fresh.search(1, vectors[3], 1)[0].id == 2
    fresh.add(1, [4], vectors[4:5])
    assert fresh.compact(1) is not None
    assert _store(tmp_path).ids(1) == frozenset({1, 2, 3, 4})


def test_compaction_keeps_what_is_appended_while_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = _unit(10, DIM, seed=10)
    compactor = _store(tmp_path)
    other = _store(tmp_path)
    reader = _store(tmp_path)
    compactor.add(1, [1, 2, 3], vectors[:3])
    assert reader.count(1) == 3
    write_snapshot = FaissVectorStore._write_snapshot

    def write_while_another_appends(
        self: FaissVectorStore, collection_id: int, index: Any, *, purpose: str
    ) -> int:
        other.add(collection_id, [4], vectors[4:5])  # needs the lock: compaction must not hold it here
        other.remove(collection_id, [1])
        return write_snapshot(self, collection_id, index, purpose=purpose)

    monkeypatch.setattr(FaissVectorStore, "_write_snapshot", write_while_another_appends)
    report = compactor.compact(1)
    monkeypatch.undo()
    assert report is not None and report.vectors == 3
    for store in (compactor, other, reader, _store(tmp_path)):
        assert store.ids(1) == frozenset({2, 3, 4})
    # The snapshot holds what was there when it was cloned; the new log carries the two later records.
    assert sorted(stored_ids(faiss.read_index(str(compactor.path(1))))) == [1, 2, 3]
    records, _ = delta_log.decode_records(
        compactor.log_path(1).read_bytes()[delta_log.HEADER_SIZE :], dim=DIM
    )
    assert [type(r).__name__ for r in records] == ["AddRecord", "RemoveRecord"]


def test_compaction_runs_in_the_background_once_the_log_outgrows_its_share(tmp_path: Path) -> None:
    store = _store(tmp_path, compact_in_background=True, compact_min_bytes=4096)
    vectors = _unit(200, DIM, seed=11)
    for start in range(0, 200, 10):
        store.add(1, list(range(start, start + 10)), vectors[start : start + 10])
    store.close()
    assert store.path(1).exists()
    assert store.log_path(1).stat().st_size < 4096 + 2 * len(
        delta_log.encode_add(np.arange(10, dtype=np.int64), vectors[:10])
    )
    assert _store(tmp_path).ids(1) == frozenset(range(200))


def test_unreadable_files_raise_until_replaced(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.path(3).write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorruptError):
        store.load(3)
    with pytest.raises(IndexCorruptError):
        store.add(3, [1], _unit(1, DIM, seed=12))  # never starts over with only these vectors
    with pytest.raises(IndexCorruptError):
        store.search(3, _unit(1, DIM, seed=12)[0], 1)
    assert store.load(4) is None
    store.replace(3, [1, 2], _unit(2, DIM, seed=13))
    assert store.ids(3) == frozenset({1, 2}) and _store(tmp_path).ids(3) == frozenset({1, 2})

    # A replica in memory notices a file changed under it, and so does a bad log header.
    store.path(3).write_bytes(b"torn")
    with pytest.raises(IndexCorruptError):
        store.ids(3)
    store.replace(3, [1], _unit(1, DIM, seed=14))
    store.log_path(3).write_bytes(b"garbage that is no log header at all")
    with pytest.raises(IndexCorruptError):
        _store(tmp_path).count(3)
    store.replace(5, [1], _unit(1, DIM, seed=16))
    with pytest.raises(IndexCorruptError, match="dimension"):
        FaissVectorStore(tmp_path, dim=DIM + 1).count(5)


def test_a_snapshot_of_the_earlier_layout_reads_as_a_base(tmp_path: Path, snapshot_reads: list[str]) -> None:
    vectors = _unit(5, DIM, seed=15)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(vectors[:3], np.arange(3, dtype=np.int64))
    faiss.write_index(index, str(tmp_path / "collection-9.faiss"))
    reader = _store(tmp_path)
    assert reader.ids(9) == frozenset({0, 1, 2})
    _store(tmp_path).add(9, [3], vectors[3:4])  # creates the log
    assert reader.ids(9) == frozenset({0, 1, 2, 3})
    assert reader.search(9, vectors[3], 1)[0].id == 3
    assert len(snapshot_reads) == 2  # the reader's load and the writer's: the reader did not reload


def test_the_retriever_sees_another_writers_vectors_without_reloading(
    tmp_path: Path, snapshot_reads: list[str]
) -> None:
    embedder = FakeEmbedder()
    store = FaissVectorStore(tmp_path, dim=embedder.dim)
    writer = FaissVectorStore(tmp_path, dim=embedder.dim)
    texts = {1: "sticky bit on directories", 2: "git branch pointer", 3: "backup with rsync"}

    class Source:
        def __init__(self) -> None:
            self.version = 0
            self.ready: dict[int, int] = {}

        def index_version(self, collection_id: int) -> int:
            return self.version

        def ready_chunks(self, collection_id: int) -> dict[int, int]:
            return dict(self.ready)

        def chunk_terms(self, chunk_ids: Any) -> dict[int, str]:
            return {i: texts[i] for i in chunk_ids}

    source = Source()
    retriever = HybridRetriever(embedder=embedder, store=store, source=source, mode="dense")
    writer.add(1, [1, 2], embedder.embed_passages([texts[1], texts[2]]))
    writer.compact(1)
    source.version, source.ready = 1, {1: 1, 2: 2}
    assert retriever.search(1, "git branch", top_k=1)[0].id == 2
    writer.add(1, [3], embedder.embed_passages([texts[3]]))
    source.version, source.ready = 2, {1: 1, 2: 2, 3: 3}
    assert retriever.search(1, "rsync backup", top_k=1)[0].id == 3
    assert len(snapshot_reads) == 1


def test_nothing_but_the_faiss_store_touches_faiss() -> None:
    """A distributed engine slots in as another ``VectorStore``: no other module of the app knows FAISS."""
    root = Path(__file__).resolve().parents[2]
    allowed = root / "app" / "rag" / "faiss_store.py"
    offenders = []
    for path in sorted([*(root / "app").rglob("*.py"), *(root / "ingest").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if path != allowed and any(name == "faiss" or name.startswith("faiss.") for name in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_the_gpu_copy_follows_adds_and_is_rebuilt_after_removals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU path's bookkeeping, with a CPU clone standing in for ``index_cpu_to_gpu``."""
    copies: list[Any] = []

    class CpuStandIn:
        def __init__(self, index: Any) -> None:
            self.index = faiss.clone_index(index)
            self.lock = threading.Lock()
            copies.append(self)

    monkeypatch.setattr(faiss_store, "gpu_available", lambda: True)
    monkeypatch.setattr(faiss_store, "_GpuCopy", CpuStandIn)
    vectors = _unit(6, DIM, seed=17)
    store = _store(tmp_path)
    store.add(1, [1, 2, 3], vectors[:3])
    assert store.search(1, vectors[2], 1)[0].id == 3 and len(copies) == 1
    store.add(1, [4], vectors[3:4])
    assert store.search(1, vectors[3], 1)[0].id == 4 and len(copies) == 1
    assert copies[0].index.ntotal == 4
    store.remove(1, [4])
    assert store.search(1, vectors[3], 1)[0].id != 4 and len(copies) == 2
    assert copies[1].index.ntotal == 3
