"""Upload, list, show and delete documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from app import uploads
from app.db import documents as db_documents
from app.db.models import Document
from app.deps import DocumentId, ServicesDep, SessionDep, SettingsDep, TenantDep
from app.rag.errors import NotFoundError, PayloadTooLargeError
from app.schemas.documents import DeleteResponse, DocumentList, DocumentPublic, UploadResponse

router = APIRouter(tags=["documents"])

# Multipart framing around the file: boundaries, headers and the metadata field.
_MULTIPART_OVERHEAD = 64 * 1024


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the file is larger than the {limit} byte upload limit", param="file")


@router.post(
    "/v1/collections/{collection}/documents",
    status_code=202,
    response_model=UploadResponse,
    responses={
        200: {"model": UploadResponse, "description": "The same bytes are already in the collection."}
    },
)
def upload_document(
    collection: str,
    request: Request,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The document: PDF, DOCX, HTML, Markdown or TXT.")],
    metadata: Annotated[str | None, Form(description="A JSON object stored with the document.")] = None,
) -> JSONResponse:
    """Upload a document into a collection (created on first use) and queue its ingestion."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise _too_large(limit)
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    outcome = uploads.accept_upload(
        session,
        tenant_id=tenant_id,
        collection_name=collection,
        filename=file.filename or "",
        data=data,
        metadata=uploads.parse_metadata(metadata),
        upload_dir=settings.upload_dir,
        embedding_model=services.embedder.name,
    )
    body = UploadResponse(
        document_id=outcome.document_id,
        job_id=outcome.job_id,
        status=outcome.status,
        duplicate=outcome.duplicate,
    )
    return JSONResponse(status_code=200 if outcome.duplicate else 202, content=body.model_dump())


def _public(session: SessionDep, document: Document, collection_name: str) -> DocumentPublic:
    job = db_documents.latest_job_for_document(session, document_id=document.id)
    return DocumentPublic(
        document_id=document.id,
        collection=collection_name,
        filename=document.filename,
        aliases=list(document.aliases or []),
        size_bytes=document.size_bytes,
        mime=document.mime,
        content_hash=document.content_hash,
        status=document.status,
        title=document.title,
        chunk_count=document.chunk_count,
        metadata=document.metadata_json,
        job_id=job.id if job else None,
        error=job.error if job and job.status == "failed" else None,
        created_at=document.created_at,
    )


@router.get("/v1/collections/{collection}/documents", response_model=DocumentList)
def list_documents(
    collection: str,
    session: SessionDep,
    tenant_id: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentList:
    """List a collection's documents."""
    found = db_documents.get_collection(session, tenant_id=tenant_id, name=collection)
    if found is None:
        raise NotFoundError(f"collection {collection!r} not found", param="collection")
    documents, total = db_documents.list_documents(
        session, tenant_id=tenant_id, collection_id=found.id, limit=limit, offset=offset
    )
    return DocumentList(
        documents=[_public(session, d, found.name) for d in documents],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/v1/documents/{document_id}", response_model=DocumentPublic)
def get_document(document_id: DocumentId, session: SessionDep, tenant_id: TenantDep) -> DocumentPublic:
    """Show one document."""
    document = db_documents.get_document(session, tenant_id=tenant_id, document_id=document_id)
    if document is None:
        raise NotFoundError(f"document {document_id} not found", param="document_id")
    collection_name = db_documents.collection_name(session, collection_id=document.collection_id)
    return _public(session, document, collection_name)


@router.delete("/v1/documents/{document_id}", response_model=DeleteResponse)
def delete_document(
    document_id: DocumentId,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    services: ServicesDep,
) -> DeleteResponse:
    """Delete a document, its chunks and its index entries."""
    uploads.delete_document(
        session,
        tenant_id=tenant_id,
        document_id=document_id,
        store=services.store,
        upload_dir=settings.upload_dir,
    )
    return DeleteResponse(document_id=document_id)
