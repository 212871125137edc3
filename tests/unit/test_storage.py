"""The store of record and its queue, against SQLite and PostgreSQL alike."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.documents import ChunkRow
from app.db.session import create_db_engine, create_session_factory, migrate
from app.rag.vector_index import VectorIndexStore, stored_ids
from app.search_index import reconcile_collection


def _factory(database_url: str) -> sessionmaker[Session]:
    engine = create_db_engine(database_url)
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


def test_reconcile_makes_the_index_agree_with_sql(database_url: str, tmp_path: Path) -> None:
    factory = _factory(database_url)
    store = VectorIndexStore(tmp_path / "indexes", dim=4)
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
    store.upsert(collection_id, [ids[0], ids[1], 999], vectors[[0, 1, 3]])
    report = reconcile_collection(factory, store, collection_id)
    assert (report.action, report.missing, report.extra) == ("patched", 1, 1)
    assert sorted(stored_ids(store.load(collection_id))) == sorted(ids)
    # A corrupt file is rebuilt from the vectors SQL keeps.
    store.path(collection_id).write_bytes(b"garbage")
    assert reconcile_collection(factory, store, collection_id).action == "rebuilt"
    assert sorted(stored_ids(store.load(collection_id))) == sorted(ids)
    assert reconcile_collection(factory, store, collection_id).action == "ok"
