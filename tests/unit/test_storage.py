"""The store of record and its queue, against SQLite and PostgreSQL alike."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.documents import ChunkRow
from app.db.models import Job
from app.db.session import create_db_engine, create_session_factory, migrate, migration_connection
from app.rag.embedding import Vectors
from app.rag.faiss_store import FaissVectorStore
from app.rag.types import ScoredId
from app.rag.vector_store import IndexCorruptError, VectorStore
from ingest.reconcile import reconcile_collection


def _factory(database_url: str) -> sessionmaker[Session]:
    engine, _ = create_db_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    return create_session_factory(engine)


def _document(session: Session, tenant: str, collection: str, content: str) -> tuple[int, int, int]:
    tenant_row = db_documents.get_or_create_tenant(session, name=tenant)
    found = db_documents.get_or_create_collection(
        session, tenant_id=tenant_row.id, name=collection, embedding_model="m"
    )
    created = db_documents.create_document_with_job(
        session,
        collection=found,
        filename=f"{content}.txt",
        content_hash=content.ljust(64, "0"),
        size_bytes=1,
        mime="text/plain",
        file_type="text",
        metadata={},
    )
    assert created is not None
    document, job = created
    session.commit()
    return tenant_row.id, document.id, job.id


def test_nothing_is_read_across_tenants(database_url: str) -> None:
    factory = _factory(database_url)
    with factory() as session:
        tenant_a, document_a, job_a = _document(session, "a", "shared-name", "one")
        tenant_b, _, _ = _document(session, "b", "shared-name", "two")
        assert db_documents.get_document(session, tenant_id=tenant_a, document_id=document_a) is not None
        assert db_documents.get_document(session, tenant_id=tenant_b, document_id=document_a) is None
        assert db_jobs.get_job(session, tenant_id=tenant_b, job_id=job_a) is None
        collection_b = db_documents.get_collection(session, tenant_id=tenant_b, name="shared-name")
        assert collection_b is not None
        documents, total = db_documents.list_documents(
            session, tenant_id=tenant_b, collection_id=collection_b.id, limit=10, offset=0
        )
        assert total == 1 and documents[0].filename == "two.txt"
        assert [s.collection.name for s in db_documents.list_collections(session, tenant_id=tenant_a)] == [
            "shared-name"
        ]


def test_duplicate_hash_in_a_collection_is_refused(database_url: str) -> None:
    factory = _factory(database_url)
    with factory() as session:
        tenant_id, _, _ = _document(session, "t", "c", "same")
        collection = db_documents.get_collection(session, tenant_id=tenant_id, name="c")
        assert collection is not None
        again = db_documents.create_document_with_job(
            session,
            collection=collection,
            filename="x.txt",
            content_hash="same".ljust(64, "0"),
            size_bytes=1,
            mime="text/plain",
            file_type="text",
            metadata={},
        )
        assert again is None


def test_a_job_is_claimed_once_and_taken_over_after_its_lease(database_url: str) -> None:
    factory = _factory(database_url)
    with factory() as session:
        _, _, job_id = _document(session, "t", "c", "job")
    with factory() as first, factory() as second:
        claimed = db_jobs.claim_next_job(first, worker_id="w1", lease_seconds=0.5)
        assert claimed is not None and claimed.id == job_id and claimed.attempts == 1
        assert db_jobs.claim_next_job(second, worker_id="w2", lease_seconds=0.5) is None
        time.sleep(0.7)  # w1 stops heart-beating, as a killed worker would
        taken = db_jobs.claim_next_job(second, worker_id="w2", lease_seconds=0.5)
        assert taken is not None and taken.id == job_id and taken.attempts == 2
        # The old owner learns it lost the job at its next report.
        assert not db_jobs.report_progress(
            first, job_id=job_id, worker_id="w1", stage="embed", progress=0.5, timings={}
        )
        assert db_jobs.report_progress(
            second, job_id=job_id, worker_id="w2", stage="embed", progress=0.5, timings={}
        )


class MemoryVectorStore:
    """``VectorStore`` in a dict, searched by brute force: reconciliation needs nothing but the protocol."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._collections: dict[int, dict[int, np.ndarray]] = {}
        self.unreadable: set[int] = set()

    @property
    def dim(self) -> int:
        return self._dim

    def _vectors(self, collection_id: int) -> dict[int, np.ndarray]:
        if collection_id in self.unreadable:
            raise IndexCorruptError(f"collection {collection_id}")
        return self._collections.setdefault(collection_id, {})

    def add(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        self._vectors(collection_id).update(zip(ids, np.array(vectors, dtype=np.float32), strict=True))

    def remove(self, collection_id: int, ids: Iterable[int]) -> None:
        held = self._vectors(collection_id)
        for chunk_id in ids:
            held.pop(chunk_id, None)

    def replace(self, collection_id: int, ids: Sequence[int], vectors: Vectors) -> None:
        self.unreadable.discard(collection_id)
        self._collections[collection_id] = {}
        self.add(collection_id, ids, vectors)

    def search(self, collection_id: int, query: Vectors, limit: int) -> list[ScoredId]:
        scored = [ScoredId(i, float(v @ query)) for i, v in self._vectors(collection_id).items()]
        return sorted(scored, key=lambda hit: -hit.score)[:limit]

    def count(self, collection_id: int) -> int:
        return len(self._vectors(collection_id))

    def ids(self, collection_id: int) -> frozenset[int]:
        return frozenset(self._vectors(collection_id))


class StoreUnderTest(Protocol):
    @property
    def store(self) -> VectorStore: ...

    def corrupt(self, collection_id: int) -> None: ...

    def held_by_a_new_instance(self, collection_id: int) -> frozenset[int]: ...


@dataclass
class FaissUnderTest:
    store: FaissVectorStore

    def corrupt(self, collection_id: int) -> None:
        self.store.path(collection_id).write_bytes(b"garbage")

    def held_by_a_new_instance(self, collection_id: int) -> frozenset[int]:
        return FaissVectorStore(self.store.path(collection_id).parent, dim=self.store.dim).ids(collection_id)


@dataclass
class MemoryUnderTest:
    store: MemoryVectorStore

    def corrupt(self, collection_id: int) -> None:
        self.store.unreadable.add(collection_id)

    def held_by_a_new_instance(self, collection_id: int) -> frozenset[int]:
        return self.store.ids(collection_id)


@pytest.fixture(params=["faiss", "memory"])
def vector_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if request.param == "faiss":
        return FaissUnderTest(FaissVectorStore(tmp_path / "indexes", dim=4))
    return MemoryUnderTest(MemoryVectorStore(dim=4))


def test_reconcile_makes_the_index_agree_with_sql(database_url: str, vector_store: StoreUnderTest) -> None:
    factory = _factory(database_url)
    store = vector_store.store
    with factory() as session:
        _, document_id, _ = _document(session, "t", "c", "doc")
        document = db_documents.get_document_for_job(session, document_id=document_id)
        assert document is not None
        vectors = np.eye(4, dtype=np.float32)
        rows = [
            ChunkRow(
                ordinal=i,
                text=f"t{i}",
                start=i,
                end=i + 1,
                section="",
                parent_ordinal=None,
                token_count=1,
                terms=f"t{i}",
                embedding=vectors[i].tobytes(),
            )
            for i in range(3)
        ]
        ids = db_documents.replace_chunks(session, document=document, rows=rows)
        db_documents.replace_chunks(session, document=document, rows=rows)  # a re-run writes the same ids
        db_documents.mark_document_ready(session, document=document, chunk_count=3)
        session.commit()
        collection_id = document.collection_id
    # The index misses one ready chunk and holds one SQL never heard of.
    store.add(collection_id, [ids[0], ids[1], 999], vectors[[0, 1, 3]])
    report = reconcile_collection(factory, store, collection_id)
    assert (report.action, report.missing, report.extra) == ("patched", 1, 1)
    assert store.ids(collection_id) == vector_store.held_by_a_new_instance(collection_id) == set(ids)
    assert store.search(collection_id, vectors[2], 1)[0].id == ids[2]
    # An unreadable index is rebuilt from the vectors SQL keeps.
    vector_store.corrupt(collection_id)
    assert reconcile_collection(factory, store, collection_id).action == "rebuilt"
    assert store.ids(collection_id) == vector_store.held_by_a_new_instance(collection_id) == set(ids)
    assert reconcile_collection(factory, store, collection_id).action == "ok"


def test_upgrading_a_populated_database_keeps_every_row(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from app.db.models import Chunk, Job
    from app.db.session import MIGRATIONS_DIR

    engine, _ = create_db_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql(
            "INSERT INTO tenants (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            "INSERT INTO collections (id, tenant_id, name, embedding_model, index_version, created_at) "
            "VALUES (1, 1, 'c', 'm', 0, CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            "INSERT INTO documents (id, tenant_id, collection_id, filename, content_hash, size_bytes, mime, "
            "file_type, status, title, metadata, chunk_count, created_at, updated_at) VALUES "
            "(1, 1, 1, 'a.txt', 'h', 1, 'text/plain', 'text', 'ready', '', '{}', 1, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            'INSERT INTO chunks (id, tenant_id, collection_id, document_id, ordinal, text, start, "end", '
            "section, token_count, terms) VALUES (1048576, 1, 1, 1, 0, 'x', 0, 1, '', 1, 'x')"
        )
        connection.exec_driver_sql(
            "INSERT INTO jobs (tenant_id, document_id, kind, status, stage, progress, attempts, timings, created_at) "
            "VALUES (1, 1, 'ingest', 'done', 'index', 1.0, 1, '{}', CURRENT_TIMESTAMP)"
        )
    migrate(engine)
    with create_session_factory(engine)() as session:
        assert session.scalar(select(func.count(Chunk.id))) == 1
        assert session.scalar(select(func.count(Job.id))) == 1
        document = db_documents.get_document(session, tenant_id=1, document_id=1)
        assert document is not None and document.aliases == []
    engine.dispose()


def _populated_at_head(database_url: str) -> tuple[Engine, int]:
    factory = _factory(database_url)
    engine = factory.kw["bind"]
    with factory() as session:
        _, document_id, _ = _document(session, "t", "c", "rebuild")
        document = db_documents.get_document_for_job(session, document_id=document_id)
        assert document is not None
        row = ChunkRow(
            ordinal=0,
            text="x",
            start=0,
            end=1,
            section="",
            parent_ordinal=None,
            token_count=1,
            terms="x",
            embedding=b"",
        )
        db_documents.replace_chunks(session, document=document, rows=[row])
        session.commit()
    return engine, document_id


def _rebuild_documents_table(connection: Connection) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    operations = Operations(MigrationContext.configure(connection))
    with operations.batch_alter_table("documents", recreate="always") as batch:
        batch.alter_column("title", existing_type=sa.Text(), nullable=False)


def _counts(engine: Engine) -> tuple[int, int]:
    from app.db.models import Chunk, Job

    with create_session_factory(engine)() as session:
        return (
            session.scalar(select(func.count(Chunk.id))) or 0,
            session.scalar(select(func.count(Job.id))) or 0,
        )


def test_a_migration_that_rebuilds_a_table_keeps_the_rows_pointing_at_it(tmp_path: Path) -> None:
    engine, _ = _populated_at_head(f"sqlite:///{tmp_path / 'guarded.db'}")
    with migration_connection(engine) as connection:
        _rebuild_documents_table(connection)
    assert _counts(engine) == (1, 1)
    engine.dispose()
    # The same rebuild on an ordinary connection (foreign keys on) loses them: what the guard is for.
    unguarded, _ = _populated_at_head(f"sqlite:///{tmp_path / 'unguarded.db'}")
    with unguarded.begin() as connection:
        _rebuild_documents_table(connection)
    assert _counts(unguarded) == (0, 0)
    unguarded.dispose()


def test_a_worker_that_lost_its_job_cannot_finish_or_fail_it(database_url: str) -> None:
    factory = _factory(database_url)
    with factory() as session:
        _, _, job_id = _document(session, "t", "c", "lease")
    with factory() as first, factory() as second:
        assert db_jobs.claim_next_job(first, worker_id="w1", lease_seconds=0.3) is not None
        time.sleep(0.5)
        assert db_jobs.claim_next_job(second, worker_id="w2", lease_seconds=0.3) is not None
        assert not db_jobs.fail_job(first, job_id=job_id, worker_id="w1", error="stale", retry=False)
        assert not db_jobs.finish_job(first, job_id=job_id, worker_id="w1", timings={})
        first.commit()
        job = second.get(Job, job_id, populate_existing=True)
        assert job is not None and (job.status, job.worker_id, job.error) == ("running", "w2", None)
        assert db_jobs.finish_job(second, job_id=job_id, worker_id="w2", timings={"embed": 1.0})
        second.commit()


def test_reconcile_keeps_vectors_of_a_document_still_being_ingested(
    database_url: str, vector_store: StoreUnderTest
) -> None:
    factory = _factory(database_url)
    store = vector_store.store
    with factory() as session:
        _, document_id, _ = _document(session, "t", "c", "busy")
        document = db_documents.get_document_for_job(session, document_id=document_id)
        assert document is not None
        row = ChunkRow(
            ordinal=0,
            text="t",
            start=0,
            end=1,
            section="",
            parent_ordinal=None,
            token_count=1,
            terms="t",
            embedding=np.eye(4, dtype=np.float32)[0].tobytes(),
        )
        ids = db_documents.replace_chunks(session, document=document, rows=[row])
        session.commit()  # chunk rows written, document not ready yet: a worker is between index and "ready"
        collection_id = document.collection_id
    store.add(collection_id, ids, np.eye(4, dtype=np.float32)[:1])
    assert reconcile_collection(factory, store, collection_id).action == "ok"
    assert store.ids(collection_id) == set(ids)
    # A rebuild keeps them too: the worker will mark the document ready without writing its vectors again.
    vector_store.corrupt(collection_id)
    assert reconcile_collection(factory, store, collection_id).action == "rebuilt"
    assert vector_store.held_by_a_new_instance(collection_id) == set(ids)


def test_a_deleted_documents_id_is_never_handed_out_again(database_url: str) -> None:
    factory = _factory(database_url)
    with factory() as session:
        _, first_id, _ = _document(session, "t", "c", "first")
        document = db_documents.get_document_for_job(session, document_id=first_id)
        assert document is not None
        db_documents.delete_document(session, document=document)
        session.commit()
        _, second_id, _ = _document(session, "t", "c", "second")
    assert second_id > first_id
