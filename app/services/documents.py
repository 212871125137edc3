"""The document use cases: upload (checks, the file on disk, rows, a job), list, show and delete documents,
list collections, show a job. Tenant and plain data in, frozen dataclasses out."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.components import Components
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.models import Document
from app.db.statuses import JobStatus
from app.rag.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from app.rag.filetypes import content_mime, detect_file_type
from app.rag.vector_store import IndexCorruptError

logger = logging.getLogger(__name__)

# Letters (any script), digits, '-', '_' and '.': safe in URLs, paths and logs.
_COLLECTION_NAME = re.compile(r"^[\w][\w.\-]{0,199}$", re.UNICODE)


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 1-200 letters, digits, '-', '_' or '.', not starting with "
            "'-' or '.'",
            param="collection",
        )
    return name


# Metadata is for labels (team, source, path), not payloads: bounded so that it cannot exhaust the parser's
# recursion, the database, or every later read of the document.
METADATA_MAX_BYTES = 64 * 1024
METADATA_MAX_DEPTH = 16


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The upload's metadata as a JSON object, checked for size, nesting and valid Unicode."""
    if raw is None or raw.strip() == "":
        return {}
    if len(raw.encode("utf-8", "surrogatepass")) > METADATA_MAX_BYTES:
        raise InvalidInputError(f"metadata is larger than {METADATA_MAX_BYTES} bytes", param="metadata")
    if _nesting(raw) > METADATA_MAX_DEPTH:
        raise InvalidInputError(
            f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels", param="metadata"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"metadata is not valid JSON: {error.msg}", param="metadata") from error
    if not isinstance(value, dict):
        raise InvalidInputError("metadata must be a JSON object", param="metadata")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        # "\ud800" is valid JSON but no text: stored, it broke every later read of the collection.
        raise InvalidInputError(
            "metadata holds an unpaired surrogate (\\ud800-\\udfff), which is not valid Unicode text",
            param="metadata",
        ) from error
    return value


def _nesting(raw: str) -> int:
    """How deeply brackets nest, counted without parsing (json.loads recurses, and overflows on 10,000)."""
    depth = deepest = 0
    in_string = escaped = False
    for character in raw:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def readable_metadata(value: Any) -> Any:
    """Stored metadata as text that always serialises: lone surrogates stored before they were refused
    become "?", so one old row can never break a listing."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value
    if isinstance(value, list):
        return [readable_metadata(v) for v in value]
    if isinstance(value, dict):
        return {readable_metadata(k): readable_metadata(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class UploadOutcome:
    document_id: int
    job_id: int | None
    status: str
    duplicate: bool
    filename: str = ""  # as stored, after normalisation
    notes: tuple[str, ...] = ()  # what was changed in the upload to store it (the filename, say)


# Longer names are cut (keeping the extension): most file systems stop at 255 bytes, and so do people's eyes.
MAX_FILENAME_CHARS = 255


def normalise_filename(raw: str) -> tuple[str, list[str]]:
    """The name a file is stored under, the same on every database, and what was changed to get it.

    Only the last path component is kept; control characters (NUL included: PostgreSQL refuses it) and
    unpaired surrogates (not text) are removed; a name past ``MAX_FILENAME_CHARS`` is shortened in its stem."""
    name = os.path.basename(raw.replace("\\", "/")).strip()
    notes = []
    kept = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs"))
    if len(kept) != len(name):
        notes.append(f"removed {len(name) - len(kept)} control or invalid characters from the filename")
        name = kept.strip()
    if len(name) > MAX_FILENAME_CHARS:
        stem, extension = os.path.splitext(name)
        extension = extension if len(extension) <= 16 else ""
        name = stem[: MAX_FILENAME_CHARS - len(extension)].rstrip() + extension
        notes.append(f"shortened the filename to {MAX_FILENAME_CHARS} characters")
    return name, notes


def _store_file(upload_dir: Path, content_hash: str, data: bytes) -> bool:
    """Store the upload's bytes under their hash; False when they were already there."""
    target = upload_dir / content_hash
    if target.exists():
        return False
    # Written under a temporary name and renamed: a crash never leaves a half file under the real name.
    handle, temporary = tempfile.mkstemp(dir=upload_dir, prefix=".upload-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)
    return True


def upload(
    components: Components,
    *,
    tenant_id: int,
    collection: str,
    filename: str,
    data: bytes,
    metadata: dict[str, Any],
) -> UploadOutcome:
    """The upload use case: ``data`` is at most ``max_upload_bytes + 1`` bytes read from the client."""
    limit = components.settings.max_upload_bytes
    if len(data) > limit:
        raise too_large(limit)
    with components.session_factory() as session:
        return accept_upload(
            session,
            tenant_id=tenant_id,
            collection_name=collection,
            filename=filename,
            data=data,
            metadata=metadata,
            upload_dir=components.settings.upload_dir,
            embedding_model=components.embedder.name,
        )


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the file is larger than the {limit} byte upload limit", param="file")


def accept_upload(
    session: Session,
    *,
    tenant_id: int,
    collection_name: str,
    filename: str,
    data: bytes,
    metadata: dict[str, Any],
    upload_dir: Path,
    embedding_model: str,
) -> UploadOutcome:
    """Check, store and queue one uploaded file; the same bytes in the same collection give the old document."""
    check_collection_name(collection_name)
    filename, notes = normalise_filename(filename)
    if not filename:
        raise InvalidInputError("the uploaded file has no filename", param="file")
    file_type = detect_file_type(filename, data)
    content_hash = hashlib.sha256(data).hexdigest()
    collection = db_documents.get_or_create_collection(
        session, tenant_id=tenant_id, name=collection_name, embedding_model=embedding_model
    )
    if collection.embedding_model != embedding_model:
        raise InvalidInputError(
            f"collection {collection_name!r} was embedded with {collection.embedding_model}, but this server "
            f"runs {embedding_model}; use another collection or the same embedding model",
            param="collection",
        )
    existing = db_documents.find_document_by_hash(
        session, collection_id=collection.id, content_hash=content_hash
    )
    if existing is None:
        stored = _store_file(upload_dir, content_hash, data)
        try:
            created = db_documents.create_document_with_job(
                session,
                collection=collection,
                filename=filename,
                content_hash=content_hash,
                size_bytes=len(data),
                mime=content_mime(file_type, data),
                file_type=file_type.value,
                metadata=metadata,
            )
            if created is not None:
                document, job = created
                session.commit()
                return UploadOutcome(
                    document.id, job.id, "queued", duplicate=False, filename=filename, notes=tuple(notes)
                )
        except Exception:
            # No row, no file: a file nothing refers to would stay in uploads/ forever.
            session.rollback()
            if stored and db_documents.count_documents_with_hash(session, content_hash=content_hash) == 0:
                (upload_dir / content_hash).unlink(missing_ok=True)
            raise
        # Lost a race with an identical upload: fall through and report that one.
        existing = db_documents.find_document_by_hash(
            session, collection_id=collection.id, content_hash=content_hash
        )
        assert existing is not None
    db_documents.add_alias(session, document=existing, filename=filename)
    session.commit()
    latest = db_documents.latest_job_for_document(session, document_id=existing.id)
    return UploadOutcome(
        existing.id,
        latest.id if latest else None,
        existing.status,
        duplicate=True,
        filename=filename,
        notes=tuple(notes),
    )


def delete_document(components: Components, *, tenant_id: int, document_id: int) -> None:
    """Remove a document everywhere: SQL first (the truth), then its index entries and its file."""
    store, upload_dir = components.store, components.settings.upload_dir
    with components.session_factory() as session:
        document = db_documents.get_document(session, tenant_id=tenant_id, document_id=document_id)
        if document is None:
            raise NotFoundError(f"document {document_id} not found", param="document_id")
        collection_id, content_hash = document.collection_id, document.content_hash
        chunk_ids = db_documents.chunk_ids_of_document(session, document_id=document_id)
        db_documents.delete_document(session, document=document)
        session.commit()
        # If we crash here the index keeps stale ids: search filters them out and start-up reconciliation
        # drops them.
        try:
            store.remove(collection_id, chunk_ids)
        except IndexCorruptError:
            # The delete itself succeeded (SQL is the truth); reconciliation rebuilds the unreadable index.
            logger.warning(
                "index of collection %s unreadable while deleting document %s", collection_id, document_id
            )
        if db_documents.count_documents_with_hash(session, content_hash=content_hash) == 0:
            (upload_dir / content_hash).unlink(missing_ok=True)


@dataclass(frozen=True)
class DocumentInfo:
    document_id: int
    collection: str
    filename: str
    aliases: tuple[str, ...]
    size_bytes: int
    mime: str
    content_hash: str
    status: str
    title: str
    chunk_count: int
    metadata: dict[str, Any]
    job_id: int | None
    error: str | None  # the failed job's reason
    created_at: datetime
    file_type: str = ""
    ocr_pages: tuple[int, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentPage:
    documents: tuple[DocumentInfo, ...]
    total: int


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    document_count: int
    chunk_count: int
    embedding_model: str
    created_at: datetime
    default_model: str | None = None


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    document_id: int | None
    kind: str
    status: str
    stage: str
    progress: float
    error: str | None
    attempts: int
    timings: dict[str, float]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] = field(default_factory=dict)


def _document_info(session: Session, document: Document, collection_name: str) -> DocumentInfo:
    job = db_documents.latest_job_for_document(session, document_id=document.id)
    return DocumentInfo(
        document_id=document.id,
        collection=collection_name,
        filename=document.filename,
        aliases=tuple(document.aliases or ()),
        size_bytes=document.size_bytes,
        mime=document.mime,
        content_hash=document.content_hash,
        status=document.status,
        title=document.title,
        chunk_count=document.chunk_count,
        metadata=readable_metadata(document.metadata_json),
        job_id=job.id if job else None,
        error=job.error if job and job.status == JobStatus.FAILED else None,
        created_at=document.created_at,
        file_type=document.file_type,
        ocr_pages=tuple(document.ocr_pages or ()),
        properties=dict(document.properties or {}),
    )


def list_documents(
    components: Components, *, tenant_id: int, collection: str, limit: int, offset: int
) -> DocumentPage:
    with components.session_factory() as session:
        found = db_documents.get_collection(session, tenant_id=tenant_id, name=collection)
        if found is None:
            raise NotFoundError(f"collection {collection!r} not found", param="collection")
        documents, total = db_documents.list_documents(
            session, tenant_id=tenant_id, collection_id=found.id, limit=limit, offset=offset
        )
        return DocumentPage(
            documents=tuple(_document_info(session, d, found.name) for d in documents), total=total
        )


def get_document(components: Components, *, tenant_id: int, document_id: int) -> DocumentInfo:
    with components.session_factory() as session:
        document = db_documents.get_document(session, tenant_id=tenant_id, document_id=document_id)
        if document is None:
            raise NotFoundError(f"document {document_id} not found", param="document_id")
        collection_name = db_documents.collection_name(session, collection_id=document.collection_id)
        return _document_info(session, document, collection_name)


def list_collections(components: Components, *, tenant_id: int) -> list[CollectionInfo]:
    with components.session_factory() as session:
        return [
            CollectionInfo(
                name=s.collection.name,
                document_count=s.document_count,
                chunk_count=s.chunk_count,
                embedding_model=s.collection.embedding_model,
                created_at=s.collection.created_at,
                default_model=s.collection.default_model,
            )
            for s in db_documents.list_collections(session, tenant_id=tenant_id)
        ]


def get_collection(components: Components, *, tenant_id: int, name: str) -> CollectionInfo:
    found = [c for c in list_collections(components, tenant_id=tenant_id) if c.name == name]
    if not found:
        raise NotFoundError(f"collection {name!r} not found", param="collection")
    return found[0]


def get_job(components: Components, *, tenant_id: int, job_id: int) -> JobInfo:
    with components.session_factory() as session:
        job = db_jobs.get_job(session, tenant_id=tenant_id, job_id=job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found", param="job_id")
        return JobInfo(
            job_id=job.id,
            document_id=job.document_id,
            kind=job.kind,
            status=job.status,
            stage=job.stage,
            progress=job.progress,
            error=job.error,
            attempts=job.attempts,
            timings=job.timings,
            created_at=db_jobs.as_utc(job.created_at),
            started_at=db_jobs.as_utc(job.started_at),
            finished_at=db_jobs.as_utc(job.finished_at),
            result=dict(job.result or {}),
        )
