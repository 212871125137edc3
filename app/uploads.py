"""Accepting and removing documents: the upload's checks, its file on disk, its rows, its index entries."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.db import documents as db_documents
from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.filetypes import detect_file_type
from app.rag.vector_index import IndexCorruptError, VectorIndexStore

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


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"metadata is not valid JSON: {error.msg}", param="metadata") from error
    if not isinstance(value, dict):
        raise InvalidInputError("metadata must be a JSON object", param="metadata")
    return value


@dataclass(frozen=True)
class UploadOutcome:
    document_id: int
    job_id: int | None
    status: str
    duplicate: bool


def _store_file(upload_dir: Path, content_hash: str, data: bytes) -> None:
    target = upload_dir / content_hash
    if target.exists():
        return
    # Written under a temporary name and renamed: a crash never leaves a half file under the real name.
    handle, temporary = tempfile.mkstemp(dir=upload_dir, prefix=".upload-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)


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
    filename = os.path.basename(filename.replace("\\", "/")).strip()
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
        _store_file(upload_dir, content_hash, data)
        created = db_documents.create_document_with_job(
            session,
            collection=collection,
            filename=filename,
            content_hash=content_hash,
            size_bytes=len(data),
            mime=file_type.mime,
            file_type=file_type.value,
            metadata=metadata,
        )
        if created is not None:
            document, job = created
            session.commit()
            return UploadOutcome(document.id, job.id, "queued", duplicate=False)
        # Lost a race with an identical upload: fall through and report that one.
        existing = db_documents.find_document_by_hash(
            session, collection_id=collection.id, content_hash=content_hash
        )
        assert existing is not None
    db_documents.add_alias(session, document=existing, filename=filename)
    session.commit()
    latest = db_documents.latest_job_for_document(session, document_id=existing.id)
    return UploadOutcome(existing.id, latest.id if latest else None, existing.status, duplicate=True)


def delete_document(
    session: Session, *, tenant_id: int, document_id: int, store: VectorIndexStore, upload_dir: Path
) -> None:
    """Remove a document everywhere: SQL first (the truth), then its index entries and its file."""
    document = db_documents.get_document(session, tenant_id=tenant_id, document_id=document_id)
    if document is None:
        raise NotFoundError(f"document {document_id} not found", param="document_id")
    collection_id, content_hash = document.collection_id, document.content_hash
    chunk_ids = db_documents.chunk_ids_of_document(session, document_id=document_id)
    db_documents.delete_document(session, document=document)
    session.commit()
    # If we crash here the index keeps stale ids: search filters them out and start-up reconciliation drops them.
    try:
        store.remove(collection_id, chunk_ids)
    except IndexCorruptError:
        # The delete itself succeeded (SQL is the truth); reconciliation rebuilds the unreadable index.
        logger.warning(
            "index of collection %s unreadable while deleting document %s", collection_id, document_id
        )
    if db_documents.count_documents_with_hash(session, content_hash=content_hash) == 0:
        (upload_dir / content_hash).unlink(missing_ok=True)
