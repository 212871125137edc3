"""FAISS behind ``VectorStore``: per collection a base snapshot and an append-only delta log on local disk.

Files in the index directory, for collection N:

* ``collection-N.faiss`` — the base snapshot: an ``IndexIDMap2(IndexFlatIP)`` keyed by chunk id, written with
  ``faiss.write_index`` to a temporary file, fsync'd and renamed into place. Absent until the first
  compaction; a file left by the earlier one-file-per-collection layout reads as a base with an empty log.
* ``collection-N.log`` — the delta log (``app.rag.delta_log``): each add or remove since that base, one
  checksummed record per change, appended and fsync'd under the collection's lock. Adding a document of 20
  chunks writes about 31 KB, however large the collection.
* ``collection-N.lock`` — ``flock``ed exclusively by writers in any process (append, compaction, replace) and
  shared by a reader while it loads both files, so that a load never pairs a snapshot with a log that
  does not belong to it.
* ``collection-N.compact.lock`` — one compaction of a collection at a time, across processes.

Each store instance keeps a replica of every collection it has touched: the index in memory, the log it
follows (kept open) and the offset of the last record applied. Before answering, it compares the files
with what it last saw (two ``stat`` calls) and applies only the records the log grew by, without a lock.

Compaction starts (in a background thread, after the change that made it due) when the log outgrows
``compact_share`` of the snapshot, and at least ``compact_min_bytes``. It clones the replica as of log
offset X, writes the clone as the new snapshot while writers go on appending, then under the lock writes a
new log (generation + 1, marked as continuing) holding the records appended after X, and renames the
snapshot into place and then the log. Replaying a log over a state that already holds a prefix of it gives
the same state (every record sets its ids to a vector or to absent), so a crash between the two renames
leaves a correct pair, and a reader that sees the continuing log reads what remained of the old one
through the descriptor it holds and goes on from the start of the new one: no reload. A reader reloads
only when the files changed in another way (a ``replace``, a crash mid-compaction, a file edited by hand).

When faiss-gpu sees a GPU, searches run on a copy of the index there, kept up to date by adds and rebuilt
after removals (which a GPU flat index does not support).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.rag import delta_log
from app.rag.delta_log import AddRecord, LogCorruptError, LogHeader, LogRecord
from app.rag.embedding import Vectors
from app.rag.types import ScoredId
from app.rag.vector_store import IndexCorruptError

logger = logging.getLogger(__name__)

# Compaction rewrites the snapshot once the log holds this share of its size, so compaction writes about
# 1 / COMPACT_SHARE snapshot bytes per log byte whatever the collection's size, and a load replays at most
# that much log over the snapshot.
COMPACT_SHARE = 0.5
# ... and not before the log holds this much (about 34 documents of 20 chunks at 384 dimensions), so that a
# small collection is not rewritten every few documents.
COMPACT_MIN_BYTES = 1 << 20

FileIdentity = tuple[int, int, int, int]  # device, inode, size, modification time (ns)


class _LockMode:
    """Which collection file lock the caller holds."""


_SHARED = _LockMode()
_EXCLUSIVE = _LockMode()


def set_faiss_threads(threads: int) -> None:
    faiss.omp_set_num_threads(threads)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def stored_ids(index: Any) -> list[int]:
    """The chunk ids an ``IndexIDMap2`` holds."""
    return [int(i) for i in faiss.vector_to_array(index.id_map)]


def _search_index(index: Any, query: Vectors, limit: int) -> list[ScoredId]:
    if limit <= 0 or index.ntotal == 0:
        return []
    scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), limit)
    return [
        ScoredId(id=int(i), score=float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i != -1
    ]


class _GpuCopy:
    """A copy of an index on GPU 0. GPU indexes are not safe for concurrent use, hence the lock."""

    def __init__(self, index: Any) -> None:
        self._resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(self._resources, 0, index)
        self.lock = threading.Lock()


class VectorSearcher:
    """One loaded index ready for search, moved to the GPU when faiss-gpu sees one (for benchmarks and
    tests that build an index by hand; the store searches its replicas itself)."""

    def __init__(self, index: Any) -> None:
        self._size = int(index.ntotal)
        self._gpu = _GpuCopy(index) if gpu_available() and self._size else None
        self._index = index

    def __len__(self) -> int:
        return self._size

    def search(self, query: Vectors, limit: int) -> list[ScoredId]:
        if self._gpu is None:
            return _search_index(self._index, query, limit)
        with self._gpu.lock:
            return _search_index(self._gpu.index, query, limit)


class _ReadWriteLock:
    """Any number of readers, or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class _IndexedVectors:
    """An index in memory and the ids it holds (FAISS cannot tell whether it holds an id without a scan).

    Searches share it; applying log records excludes them, since FAISS indexes are not safe to change while
    searched."""

    def __init__(self, index: Any, *, dim: int, use_gpu: bool) -> None:
        if not hasattr(index, "id_map") or index.d != dim:
            raise IndexCorruptError(
                f"expected an IndexIDMap2 of dimension {dim}, found {type(index).__name__}"
            )
        held = faiss.vector_to_array(index.id_map)
        self.ids = set(held.tolist())
        if len(self.ids) != len(held):
            raise IndexCorruptError(f"{len(held) - len(self.ids)} duplicate ids")
        self.index = index
        self._use_gpu = use_gpu
        self._gpu: _GpuCopy | None = None
        self._gpu_guard = threading.Lock()
        self._lock = _ReadWriteLock()

    def apply(self, records: Iterable[LogRecord]) -> None:
        with self._lock.writing():
            for record in records:
                present = [i for i in record.ids.tolist() if i in self.ids]
                if present:
                    # O(collection) in FAISS, so only for ids actually held: a new document never pays it.
                    self.index.remove_ids(np.asarray(present, dtype=np.int64))
                    self.ids.difference_update(present)
                    self._gpu = None
                if isinstance(record, AddRecord) and len(record.ids):
                    self.index.add_with_ids(record.vectors, record.ids)
                    self.ids.update(record.ids.tolist())
                    if self._gpu is not None:
                        self._gpu.index.add_with_ids(record.vectors, record.ids)

    def search(self, query: Vectors, limit: int) -> list[ScoredId]:
        with self._lock.reading():
            if not (self._use_gpu and self.index.ntotal):
                return _search_index(self.index, query, limit)
            with self._gpu_guard:
                if self._gpu is None:
                    self._gpu = _GpuCopy(self.index)
                gpu = self._gpu
            with gpu.lock:
                return _search_index(gpu.index, query, limit)

    def count(self) -> int:
        with self._lock.reading():
            return int(self.index.ntotal)

    def id_set(self) -> frozenset[int]:
        with self._lock.reading():
            return frozenset(self.ids)

    def clone(self) -> Any:
        with self._lock.reading():
            return faiss.clone_index(self.index)


@dataclass
class _DiskState:
    """Where a replica stands in a collection's files."""

    vectors: _IndexedVectors
    log_fd: int | None  # the log followed, kept open so that a log replaced by a compaction can be finished
    log_file: tuple[int, int] | None  # its device and inode
    generation: int
    offset: int  # end of the last record applied
    snapshot: FileIdentity | None
    snapshot_bytes: int


class _Replica:
    def __init__(self) -> None:
        # One thread at a time brings the replica up to date or writes through it.
        self.mutex = threading.Lock()
        self.state: _DiskState | None = None
        # The files as they were when reading them failed, and why: not read again until they change.
        self.broken: tuple[tuple[FileIdentity | None, FileIdentity | None], str] | None = None

    def install(self, state: _DiskState) -> None:
        self.forget()
        self.state = state
        self.broken = None

    def forget(self) -> None:
        if self.state is not None and self.state.log_fd is not None:
            os.close(self.state.log_fd)
        self.state = None


@dataclass(frozen=True)
class CompactionReport:
    collection_id: int
    vectors: int
    bytes_written: int  # the snapshot and the new log
    seconds: float


def _identity(path: Path) -> FileIdentity | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _open_for_reading(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _file_of(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return (status.st_dev, status.st_ino)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class FaissVectorStore:
    """``VectorStore`` over FAISS files in ``directory``; safe across threads and processes (see the module
    docstring). ``compact_in_background=False`` leaves compaction to explicit ``compact`` calls."""

    def __init__(
        self,
        directory: Path,
        *,
        dim: int,
        compact_share: float = COMPACT_SHARE,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        compact_in_background: bool = True,
    ) -> None:
        self._directory = directory
        self._dim = dim
        self._compact_share = compact_share
        self._compact_min_bytes = compact_min_bytes
        self._compact_in_background = compact_in_background
        self._use_gpu = gpu_available()
        self._replicas: dict[int, _Replica] = {}
        self._compactions: dict[int, threading.Thread] = {}
        self._guard = threading.Lock()
        # How many times this instance read a collection's files whole (the first read included), for
        # monitoring and benchmarks: catching up with a delta or a compaction does not count.
        self.full_loads = 0
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def dim(self) -> int:
        return self._dim

    def path(self, collection_id: int) -> Path:
        """The collection's base snapshot."""
        return self._directory / f"collection-{collection_id}.faiss"

    def log_path(self, collection_id: int) -> Path:
        return self._directory / f"collection-{collection_id}.log"

    def new_index(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))

    # The protocol.

    def add(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        id_array, matrix = self._checked(ids, vectors)
        if not len(id_array):
            return
        record = AddRecord(ids=id_array, vectors=matrix)
        with self._writing(collection_id) as replica:
            self._append(collection_id, replica, delta_log.encode_add(id_array, matrix), record)
        self._schedule_compaction(collection_id)

    def remove(self, collection_id: int, ids: Iterable[int]) -> None:
        wanted = {int(i) for i in ids}
        with self._writing(collection_id) as replica:
            assert replica.state is not None
            # Only ids held: removing nothing writes nothing (and creates no files).
            held = np.asarray(sorted(wanted & replica.state.vectors.ids), dtype=np.int64)
            if not len(held):
                return
            record = delta_log.RemoveRecord(ids=held)
            self._append(collection_id, replica, delta_log.encode_remove(held), record)
        self._schedule_compaction(collection_id)

    def replace(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        id_array, matrix = self._checked(ids, vectors)
        index = self.new_index()
        if len(id_array):
            index.add_with_ids(matrix, id_array)
        indexed = _IndexedVectors(index, dim=self._dim, use_gpu=self._use_gpu)
        replica = self._replica(collection_id)
        with replica.mutex, self._file_lock(collection_id, exclusive=True):
            previous = self._readable_generation(collection_id)
            # Not marked as continuing: readers of the old log reload.
            header = LogHeader(dim=self._dim, generation=previous + 1, continues=False)
            try:
                snapshot_bytes = self._write_snapshot(collection_id, index, purpose="replace")
                self._install_files(collection_id, header, b"", purpose="replace")
            finally:
                self._temporary(self.path(collection_id), "replace").unlink(missing_ok=True)
                self._temporary(self.log_path(collection_id), "replace").unlink(missing_ok=True)
            replica.install(self._follow_installed(collection_id, indexed, header, snapshot_bytes, 0))
        logger.info("collection %s vectors replaced: %d", collection_id, len(ids))

    def search(self, collection_id: int, query: Vectors, limit: int) -> list[ScoredId]:
        return self._current(collection_id).search(query, limit)

    def count(self, collection_id: int) -> int:
        return self._current(collection_id).count()

    def ids(self, collection_id: int) -> frozenset[int]:
        return self._current(collection_id).id_set()

    # FAISS-specific: inspection, compaction, shutdown.

    def load(self, collection_id: int) -> Any | None:
        """The collection's index read afresh from its files (snapshot and log), independent of any replica;
        None when it has neither. For tests and tools: what a process starting now would see."""
        if self.path(collection_id).exists() or self.log_path(collection_id).exists():
            with self._file_lock(collection_id, exclusive=False):
                state = self._read_files(collection_id)
            if state.log_fd is not None:
                os.close(state.log_fd)
            return state.vectors.index
        return None

    def rebuild(self, collection_id: int, ids: list[int], vectors: Vectors) -> None:
        """The earlier name of ``replace`` (``bench/retrieve.py`` calls it)."""
        self.replace(collection_id, ids, vectors)

    def compaction_due(self, collection_id: int) -> bool:
        replica = self._replicas.get(collection_id)
        state = replica.state if replica is not None else None
        if state is None or state.log_fd is None:
            return False
        log_bytes = state.offset - delta_log.HEADER_SIZE
        return log_bytes > max(self._compact_min_bytes, self._compact_share * state.snapshot_bytes)

    def compact(self, collection_id: int) -> CompactionReport | None:
        """Fold the log into a new snapshot; None when there is nothing to fold or another compaction of the
        collection (in any process) is running."""
        began = time.perf_counter()
        with self._compaction_lock(collection_id) as acquired:
            if not acquired:
                return None
            try:
                written = self._compact(collection_id)
            finally:
                # Left only by a failure: a finished compaction renamed them.
                self._temporary(self.path(collection_id), "compact").unlink(missing_ok=True)
                self._temporary(self.log_path(collection_id), "compact").unlink(missing_ok=True)
        if written is None:
            return None
        vectors, bytes_written = written
        report = CompactionReport(
            collection_id=collection_id,
            vectors=vectors,
            bytes_written=bytes_written,
            seconds=time.perf_counter() - began,
        )
        logger.info(
            "collection %s compacted: %d vectors, %d bytes in %.2f s",
            collection_id,
            report.vectors,
            report.bytes_written,
            report.seconds,
        )
        return report

    def _compact(self, collection_id: int) -> tuple[int, int] | None:
        """Vectors in the new snapshot and bytes written; called holding the compaction lock."""
        replica = self._replica(collection_id)
        with replica.mutex:
            self._sync(collection_id, replica, held=None)
            state = replica.state
            assert state is not None
            if state.log_fd is None or state.offset == delta_log.HEADER_SIZE:
                return None
            generation, log_file, start = state.generation, state.log_file, state.offset
            clone = state.vectors.clone()
        # Writers go on appending while the snapshot is written: only the renames need the lock.
        vectors = int(clone.ntotal)
        snapshot_bytes = self._write_snapshot(collection_id, clone, purpose="compact")
        del clone
        with replica.mutex, self._file_lock(collection_id, exclusive=True):
            self._sync(collection_id, replica, held=_EXCLUSIVE)
            state = replica.state
            assert state is not None
            if (state.generation, state.log_file) != (generation, log_file) or state.log_fd is None:
                logger.info("collection %s was replaced during its compaction; abandoned", collection_id)
                return None
            tail = os.pread(state.log_fd, state.offset - start, start)
            header = LogHeader(dim=self._dim, generation=generation + 1, continues=True)
            self._install_files(collection_id, header, tail, purpose="compact")
            replica.install(
                self._follow_installed(collection_id, state.vectors, header, snapshot_bytes, len(tail))
            )
        return vectors, snapshot_bytes + delta_log.HEADER_SIZE + len(tail)

    def close(self) -> None:
        """Wait for background compactions and close the logs followed."""
        with self._guard:
            threads = list(self._compactions.values())
        for thread in threads:
            thread.join()
        with self._guard:
            replicas = list(self._replicas.values())
        for replica in replicas:
            with replica.mutex:
                replica.forget()

    # Keeping replicas current.

    def _replica(self, collection_id: int) -> _Replica:
        with self._guard:
            return self._replicas.setdefault(collection_id, _Replica())

    def _current(self, collection_id: int) -> _IndexedVectors:
        replica = self._replica(collection_id)
        state = replica.state
        if state is None or not self._unchanged(collection_id, state):
            with replica.mutex:
                self._sync(collection_id, replica, held=None)
                state = replica.state
        assert state is not None
        return state.vectors

    def _unchanged(self, collection_id: int, state: _DiskState) -> bool:
        """Whether the files are as the replica last saw them (read without a lock: a wrong no is harmless)."""
        try:
            log = os.stat(self.log_path(collection_id))
        except FileNotFoundError:
            log_now = None
        else:
            if log.st_size != state.offset:
                return False
            log_now = (log.st_dev, log.st_ino)
        return log_now == state.log_file and _identity(self.path(collection_id)) == state.snapshot

    def _sync(self, collection_id: int, replica: _Replica, *, held: _LockMode | None) -> None:
        """Bring the replica up to its files; called with ``replica.mutex`` and the file lock ``held``."""
        state = replica.state
        if state is not None:
            try:
                if self._catch_up(collection_id, state, truncate=held is _EXCLUSIVE):
                    return
            except IndexCorruptError as error:
                self._mark_broken(collection_id, replica, error)
                raise
        self._reload(collection_id, replica, held=held)

    def _catch_up(self, collection_id: int, state: _DiskState, *, truncate: bool) -> bool:
        """Apply what the files gained; False when they changed in a way that needs a reload."""
        log = _identity(self.log_path(collection_id))
        if (log[:2] if log else None) != state.log_file:
            if not self._follow_new_log(collection_id, state):
                return False
        elif _identity(self.path(collection_id)) != state.snapshot:
            # A new snapshot under the same log: a compaction between its two renames (wait for it under the
            # lock), one that crashed there, or a file changed by hand. Read both afresh.
            return False
        self._read_tail(collection_id, state, truncate=truncate)
        return True

    def _reload(self, collection_id: int, replica: _Replica, *, held: _LockMode | None) -> None:
        if held is None:
            with self._file_lock(collection_id, exclusive=False):
                # Under the lock the files may turn out to need no reload (a compaction just finished).
                self._sync(collection_id, replica, held=_SHARED)
            return
        fingerprint = self._fingerprint(collection_id)
        if replica.state is None and replica.broken is not None and replica.broken[0] == fingerprint:
            raise IndexCorruptError(replica.broken[1])
        try:
            state = self._read_files(collection_id)
        except IndexCorruptError as error:
            self._mark_broken(collection_id, replica, error)
            raise
        replica.install(state)
        with self._guard:
            self.full_loads += 1
        logger.info(
            "collection %s loaded: %d vectors, log generation %d",
            collection_id,
            state.vectors.count(),
            state.generation,
        )
        if held is _EXCLUSIVE:
            self._read_tail(collection_id, state, truncate=True)

    def _mark_broken(self, collection_id: int, replica: _Replica, error: IndexCorruptError) -> None:
        replica.forget()
        replica.broken = (self._fingerprint(collection_id), str(error))
        logger.error("vector index of collection %s unreadable: %s", collection_id, error)

    def _fingerprint(self, collection_id: int) -> tuple[FileIdentity | None, FileIdentity | None]:
        return (_identity(self.log_path(collection_id)), _identity(self.path(collection_id)))

    def _read_files(self, collection_id: int) -> _DiskState:
        """Snapshot and log as they are; the caller holds the collection's file lock."""
        log_path = self.log_path(collection_id)
        log_fd = _open_for_reading(log_path)
        try:
            header = self._read_header(collection_id, log_fd) if log_fd is not None else None
            snapshot = _identity(self.path(collection_id))
            index = self._read_snapshot(collection_id) if snapshot is not None else self.new_index()
            vectors = _IndexedVectors(index, dim=self._dim, use_gpu=self._use_gpu)
            state = _DiskState(
                vectors=vectors,
                log_fd=log_fd,
                log_file=_file_of(log_fd) if log_fd is not None else None,
                generation=header.generation if header is not None else 0,
                offset=delta_log.HEADER_SIZE if log_fd is not None else 0,
                snapshot=snapshot,
                snapshot_bytes=snapshot[2] if snapshot is not None else 0,
            )
            if log_fd is not None:
                self._read_tail(collection_id, state, truncate=False)
        except IndexCorruptError as error:
            if log_fd is not None:
                os.close(log_fd)
            raise IndexCorruptError(f"collection {collection_id} in {self._directory}: {error}") from error
        except BaseException:
            if log_fd is not None:
                os.close(log_fd)
            raise
        return state

    def _read_snapshot(self, collection_id: int) -> Any:
        path = self.path(collection_id)
        try:
            return faiss.read_index(str(path))
        except RuntimeError as error:
            raise IndexCorruptError(f"{path.name}: {error}") from error

    def _read_header(self, collection_id: int, log_fd: int) -> LogHeader:
        try:
            header = delta_log.decode_header(os.pread(log_fd, delta_log.HEADER_SIZE, 0))
        except LogCorruptError as error:
            raise IndexCorruptError(f"{self.log_path(collection_id).name}: {error}") from error
        if header.dim != self._dim:
            raise IndexCorruptError(f"log of dimension {header.dim}, expected {self._dim}")
        return header

    def _read_tail(self, collection_id: int, state: _DiskState, *, truncate: bool) -> None:
        """Apply the records the log grew by; with ``truncate`` (the exclusive lock held), cut a torn tail."""
        if state.log_fd is None:
            return
        size = os.fstat(state.log_fd).st_size
        if size == state.offset:
            return
        data = os.pread(state.log_fd, size - state.offset, state.offset)
        try:
            records, used = delta_log.decode_records(data, dim=self._dim)
        except LogCorruptError as error:
            raise IndexCorruptError(f"{self.log_path(collection_id).name}: {error}") from error
        state.vectors.apply(records)
        state.offset += used
        if truncate and state.offset < size:
            # A writer died mid-append: its record was never acknowledged, so nothing is lost by dropping it.
            logger.warning(
                "collection %s: dropping a torn log tail of %d bytes", collection_id, size - state.offset
            )
            os.truncate(self.log_path(collection_id), state.offset)
            _fsync_file(self.log_path(collection_id))

    def _follow_new_log(self, collection_id: int, state: _DiskState) -> bool:
        """Switch to a log that continues the one followed (after finishing that one); False if it does not."""
        log_fd = _open_for_reading(self.log_path(collection_id))
        if log_fd is None:
            return False
        try:
            header = self._read_header(collection_id, log_fd)
        except IndexCorruptError:
            os.close(log_fd)
            return False
        first = state.log_fd is None and header.generation == 0
        continues = (
            state.log_fd is not None and header.continues and header.generation == state.generation + 1
        )
        if not (first or continues):
            os.close(log_fd)
            return False
        if state.log_fd is not None:
            # The old log is complete: the compaction that replaced it held the lock after its last append.
            self._read_tail(collection_id, state, truncate=False)
            os.close(state.log_fd)
        snapshot = _identity(self.path(collection_id))
        state.log_fd = log_fd
        state.log_file = _file_of(log_fd)
        state.generation = header.generation
        state.offset = delta_log.HEADER_SIZE
        state.snapshot = snapshot
        state.snapshot_bytes = snapshot[2] if snapshot is not None else 0
        return True

    # Writing.

    @contextlib.contextmanager
    def _writing(self, collection_id: int) -> Iterator[_Replica]:
        """The replica, current, with the collection locked against every other writer."""
        replica = self._replica(collection_id)
        with replica.mutex, self._file_lock(collection_id, exclusive=True):
            self._sync(collection_id, replica, held=_EXCLUSIVE)
            yield replica

    def _checked(self, ids: Sequence[int], vectors: Vectors) -> tuple[delta_log.Ids, delta_log.Matrix]:
        id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(id_array) and not matrix.size:
            matrix = matrix.reshape(0, self._dim)
        if matrix.shape != (len(id_array), self._dim):
            raise ValueError(
                f"{len(id_array)} ids need {len(id_array)} vectors of {self._dim}, not {matrix.shape}"
            )
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("ids repeat")
        return id_array, matrix

    def _append(self, collection_id: int, replica: _Replica, data: bytes, record: LogRecord) -> None:
        state = replica.state
        assert state is not None
        if state.log_fd is None:
            header = LogHeader(dim=self._dim, generation=0, continues=False)
            temporary = self._temporary(self.log_path(collection_id), "create")
            _write_durably(temporary, delta_log.encode_header(header))
            os.replace(temporary, self.log_path(collection_id))
            self._fsync_directory()
            followed = self._follow_new_log(collection_id, state)
            assert followed, "a first log is always followed"
        fd = os.open(self.log_path(collection_id), os.O_WRONLY)
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], state.offset + written)
            os.fsync(fd)
        finally:
            os.close(fd)
        state.vectors.apply([record])
        state.offset += len(data)

    def _readable_generation(self, collection_id: int) -> int:
        log_fd = _open_for_reading(self.log_path(collection_id))
        if log_fd is None:
            return 0
        try:
            return delta_log.decode_header(os.pread(log_fd, delta_log.HEADER_SIZE, 0)).generation
        except LogCorruptError:
            return 0
        finally:
            os.close(log_fd)

    def _write_snapshot(self, collection_id: int, index: Any, *, purpose: str) -> int:
        temporary = self._temporary(self.path(collection_id), purpose)
        faiss.write_index(index, str(temporary))
        _fsync_file(temporary)
        return temporary.stat().st_size

    def _install_files(self, collection_id: int, header: LogHeader, records: bytes, *, purpose: str) -> None:
        """Rename the written snapshot into place, then a new log: with the exclusive lock held."""
        log_temporary = self._temporary(self.log_path(collection_id), purpose)
        _write_durably(log_temporary, delta_log.encode_header(header) + records)
        os.replace(self._temporary(self.path(collection_id), purpose), self.path(collection_id))
        os.replace(log_temporary, self.log_path(collection_id))
        self._fsync_directory()

    def _follow_installed(
        self,
        collection_id: int,
        vectors: _IndexedVectors,
        header: LogHeader,
        snapshot_bytes: int,
        records: int,
    ) -> _DiskState:
        """The replica's place in files just installed, whose log holds ``records`` bytes of records that
        ``vectors`` already reflects."""
        log_fd = os.open(self.log_path(collection_id), os.O_RDONLY)
        return _DiskState(
            vectors=vectors,
            log_fd=log_fd,
            log_file=_file_of(log_fd),
            generation=header.generation,
            offset=delta_log.HEADER_SIZE + records,
            snapshot=_identity(self.path(collection_id)),
            snapshot_bytes=snapshot_bytes,
        )

    def _schedule_compaction(self, collection_id: int) -> None:
        if not (self._compact_in_background and self.compaction_due(collection_id)):
            return
        with self._guard:
            running = self._compactions.get(collection_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._compact_quietly,
                args=(collection_id,),
                name=f"compact-collection-{collection_id}",
                daemon=True,
            )
            self._compactions[collection_id] = thread
            thread.start()

    def _compact_quietly(self, collection_id: int) -> None:
        try:
            self.compact(collection_id)
        except Exception:
            # The log just keeps growing until the next attempt; nothing is lost.
            logger.exception("compaction of collection %s failed", collection_id)

    # Files and locks.

    def _temporary(self, path: Path, purpose: str) -> Path:
        # One name per purpose: each purpose runs under a lock, so no two writers share one, and a crash
        # leaves at most one stale file per purpose, overwritten next time.
        return path.with_name(f"{path.name}.{purpose}.tmp")

    def _fsync_directory(self) -> None:
        fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _file_lock(self, collection_id: int, *, exclusive: bool) -> Iterator[None]:
        fd = os.open(self._directory / f"collection-{collection_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _compaction_lock(self, collection_id: int) -> Iterator[bool]:
        path = self._directory / f"collection-{collection_id}.compact.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)
