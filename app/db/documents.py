"""Data access for tenants, collections, documents and chunks: keyword-only functions over a Session.

Callers own the transaction (they commit); these functions only read, add and flush.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.jobs import enqueue_job
from app.db.models import Chunk, Collection, Document, Job, Tenant
from app.db.statuses import DocumentStatus, JobKind

# Chunk ids are document_id << CHUNK_ID_BITS | ordinal: deterministic, so a re-run job writes the same ids.
CHUNK_ID_BITS = 20
MAX_CHUNKS_PER_DOCUMENT = 1 << CHUNK_ID_BITS


def chunk_id_for(*, document_id: int, ordinal: int) -> int:
    if not 0 <= ordinal < MAX_CHUNKS_PER_DOCUMENT:
        raise ValueError(f"a document may have at most {MAX_CHUNKS_PER_DOCUMENT} chunks")
    return (document_id << CHUNK_ID_BITS) | ordinal


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    try:
        with session.begin_nested():
            tenant = Tenant(name=name)
            session.add(tenant)
    except IntegrityError:  # created concurrently by another request or process
        tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


def get_collection(session: Session, *, tenant_id: int, name: str) -> Collection | None:
    return session.scalar(
        select(Collection).where(Collection.tenant_id == tenant_id, Collection.name == name)
    )


def get_or_create_collection(
    session: Session, *, tenant_id: int, name: str, embedding_model: str
) -> Collection:
    collection = get_collection(session, tenant_id=tenant_id, name=name)
    if collection is not None:
        return collection
    try:
        with session.begin_nested():
            collection = Collection(tenant_id=tenant_id, name=name, embedding_model=embedding_model)
            session.add(collection)
    except IntegrityError:
        collection = get_collection(session, tenant_id=tenant_id, name=name)
        assert collection is not None
    return collection


@dataclass(frozen=True)
class CollectionSummary:
    collection: Collection
    document_count: int
    chunk_count: int


def list_collections(session: Session, *, tenant_id: int) -> list[CollectionSummary]:
    rows = session.execute(
        select(Collection, func.count(Document.id), func.coalesce(func.sum(Document.chunk_count), 0))
        .outerjoin(Document, Document.collection_id == Collection.id)
        .where(Collection.tenant_id == tenant_id)
        .group_by(Collection.id)
        .order_by(Collection.name)
    ).all()
    return [CollectionSummary(collection=c, document_count=n, chunk_count=int(k)) for c, n, k in rows]


def all_collections(session: Session) -> list[Collection]:
    """Every tenant's collections: for start-up index reconciliation only, never for requests."""
    return list(session.scalars(select(Collection).order_by(Collection.id)))


def find_document_by_hash(session: Session, *, collection_id: int, content_hash: str) -> Document | None:
    return session.scalar(
        select(Document).where(Document.collection_id == collection_id, Document.content_hash == content_hash)
    )


def create_document_with_job(
    session: Session,
    *,
    collection: Collection,
    filename: str,
    content_hash: str,
    size_bytes: int,
    mime: str,
    file_type: str,
    metadata: dict[str, Any],
) -> tuple[Document, Job] | None:
    """Add a document and its ingest job; None when the same bytes are already in the collection."""
    try:
        with session.begin_nested():
            document = Document(
                tenant_id=collection.tenant_id,
                collection_id=collection.id,
                filename=filename,
                content_hash=content_hash,
                size_bytes=size_bytes,
                mime=mime,
                file_type=file_type,
                status=DocumentStatus.QUEUED,
                metadata_json=metadata,
            )
            session.add(document)
            session.flush()
            job = enqueue_job(
                session,
                tenant_id=collection.tenant_id,
                kind=JobKind.INGEST,
                payload={"document_id": document.id},
                document_id=document.id,
            )
    except IntegrityError:
        return None
    return document, job


def add_alias(session: Session, *, document: Document, filename: str) -> None:
    """Remember another name the same bytes were uploaded under (the document itself is not duplicated)."""
    if filename != document.filename and filename not in (document.aliases or []):
        document.aliases = [*(document.aliases or []), filename]
        session.flush()


def get_document(session: Session, *, tenant_id: int, document_id: int) -> Document | None:
    return session.scalar(select(Document).where(Document.id == document_id, Document.tenant_id == tenant_id))


def get_document_for_job(session: Session, *, document_id: int) -> Document | None:
    """The worker's view: jobs carry their own tenant, so no request tenant applies."""
    return session.get(Document, document_id)


def list_documents(
    session: Session, *, tenant_id: int, collection_id: int, limit: int, offset: int
) -> tuple[list[Document], int]:
    where = (Document.tenant_id == tenant_id, Document.collection_id == collection_id)
    total = session.scalar(select(func.count(Document.id)).where(*where)) or 0
    documents = session.scalars(
        select(Document).where(*where).order_by(Document.id).limit(limit).offset(offset)
    ).all()
    return list(documents), total


def count_documents_with_hash(session: Session, *, content_hash: str) -> int:
    return session.scalar(select(func.count(Document.id)).where(Document.content_hash == content_hash)) or 0


def latest_job_for_document(session: Session, *, document_id: int) -> Job | None:
    return session.scalar(select(Job).where(Job.document_id == document_id).order_by(Job.id.desc()).limit(1))


def chunk_ids_of_document(session: Session, *, document_id: int) -> list[int]:
    return list(session.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))


def delete_document(session: Session, *, document: Document) -> None:
    """Remove a document with its chunks and jobs, and tell index readers the collection changed."""
    session.execute(delete(Chunk).where(Chunk.document_id == document.id))
    session.execute(delete(Job).where(Job.document_id == document.id))
    session.execute(
        update(Collection)
        .where(Collection.id == document.collection_id)
        .values(index_version=Collection.index_version + 1)
    )
    session.delete(document)
    session.flush()


@dataclass(frozen=True)
class ChunkRow:
    """What the ingest pipeline writes for one chunk."""

    ordinal: int
    text: str
    start: int
    end: int
    section: str
    parent_ordinal: int | None
    token_count: int
    terms: str
    embedding: bytes


def replace_chunks(session: Session, *, document: Document, rows: Sequence[ChunkRow]) -> list[int]:
    """Write a document's chunks, replacing any from an earlier attempt; returns their ids in order."""
    session.execute(delete(Chunk).where(Chunk.document_id == document.id))
    ids = [chunk_id_for(document_id=document.id, ordinal=row.ordinal) for row in rows]
    session.add_all(
        Chunk(
            id=chunk_id,
            tenant_id=document.tenant_id,
            collection_id=document.collection_id,
            document_id=document.id,
            ordinal=row.ordinal,
            text=row.text,
            start=row.start,
            end=row.end,
            section=row.section,
            parent_id=(
                None
                if row.parent_ordinal is None
                else chunk_id_for(document_id=document.id, ordinal=row.parent_ordinal)
            ),
            token_count=row.token_count,
            terms=row.terms,
            embedding=row.embedding,
        )
        for chunk_id, row in zip(ids, rows, strict=True)
    )
    session.flush()
    return ids


def record_parsed(
    session: Session,
    *,
    document: Document,
    title: str,
    text_length: int,
    ocr_pages: list[int],
    properties: dict[str, str],
) -> None:
    """What parsing learned about a document: its title, the length of its text, the pages read by OCR and
    what the file says about itself."""
    document.title = title[:1000]
    document.text_length = text_length
    document.ocr_pages = ocr_pages
    document.properties = properties
    session.flush()


def set_document_status(session: Session, *, document_id: int, status: DocumentStatus) -> None:
    session.execute(
        update(Document)
        .where(Document.id == document_id)
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


def mark_document_ready(session: Session, *, document: Document, chunk_count: int) -> None:
    document.status = DocumentStatus.READY
    document.chunk_count = chunk_count
    session.execute(
        update(Collection)
        .where(Collection.id == document.collection_id)
        .values(index_version=Collection.index_version + 1)
    )
    session.flush()


def index_version(session: Session, *, collection_id: int) -> int:
    return session.scalar(select(Collection.index_version).where(Collection.id == collection_id)) or 0


def ready_chunk_ids(session: Session, *, collection_id: int) -> set[int]:
    """Ids of the chunks that search may return: those of documents whose ingestion finished."""
    return set(
        session.scalars(
            select(Chunk.id)
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.collection_id == collection_id, Document.status == "ready")
        )
    )


def chunk_ids_of_collection(session: Session, *, collection_id: int) -> set[int]:
    """Every chunk row of the collection, ready or still being ingested."""
    return set(session.scalars(select(Chunk.id).where(Chunk.collection_id == collection_id)))


def ready_chunk_documents(session: Session, *, collection_id: int) -> dict[int, int]:
    """Ready chunk id → its document id, for the collection."""
    rows = session.execute(
        select(Chunk.id, Chunk.document_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.collection_id == collection_id, Document.status == "ready")
    )
    return {chunk_id: document_id for chunk_id, document_id in rows}


def chunk_terms(session: Session, *, chunk_ids: Iterable[int]) -> dict[int, str]:
    wanted = list(chunk_ids)
    result: dict[int, str] = {}
    for i in range(0, len(wanted), 5000):
        rows = session.execute(select(Chunk.id, Chunk.terms).where(Chunk.id.in_(wanted[i : i + 5000])))
        for chunk_id, terms in rows:
            result[chunk_id] = terms
    return result


def chunk_embeddings(session: Session, *, chunk_ids: Iterable[int]) -> dict[int, bytes]:
    wanted = list(chunk_ids)
    result: dict[int, bytes] = {}
    for i in range(0, len(wanted), 5000):
        rows = session.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(wanted[i : i + 5000])))
        for chunk_id, blob in rows:
            if blob is not None:
                result[chunk_id] = blob
    return result


def ready_chunks_by_id(
    session: Session, *, tenant_id: int, collection_id: int, chunk_ids: Sequence[int]
) -> dict[int, tuple[Chunk, Document]]:
    """Chunks with their document, limited to the tenant, the collection and ready documents."""
    if not chunk_ids:
        return {}
    rows = session.execute(
        select(Chunk, Document)
        .join(Document, Document.id == Chunk.document_id)
        .where(
            Chunk.id.in_(list(chunk_ids)),
            Chunk.tenant_id == tenant_id,
            Chunk.collection_id == collection_id,
            Document.status == "ready",
        )
    )
    return {chunk.id: (chunk, document) for chunk, document in rows}


def collection_name(session: Session, *, collection_id: int) -> str:
    return session.scalars(select(Collection.name).where(Collection.id == collection_id)).one()
