"""Upload, list, show and delete documents."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from app.deps import ComponentsDep, DocumentId, TenantDep
from app.schemas.documents import DeleteResponse, DocumentList, DocumentPublic, UploadResponse
from app.services import documents
from app.services.documents import DocumentInfo

router = APIRouter(tags=["documents"])

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
    components: ComponentsDep,
    tenant_id: TenantDep,
    file: Annotated[UploadFile, File(
            description="The document: PDF, Word, PowerPoint, Excel, OpenDocument, EPUB, e-mail, HTML, "
            "Markdown, reStructuredText, CSV, JSON, YAML, XML, images (OCR) or any text file; the README lists all."
        )],
    metadata: Annotated[str | None, Form(description="A JSON object stored with the document.")] = None,
) -> JSONResponse:
    """Upload a document into a collection (created on first use) and queue its ingestion."""
    # Bodies far over the limit never get here (app.body_limit); this catches a file just over it.
    limit = components.settings.max_upload_bytes
    outcome = documents.upload(
        components,
        tenant_id=tenant_id,
        collection=collection,
        filename=file.filename or "",
        data=file.file.read(limit + 1),  # one byte past the limit tells a too-large file
        metadata=documents.parse_metadata(metadata),
    )
    body = UploadResponse(
        document_id=outcome.document_id,
        job_id=outcome.job_id,
        status=outcome.status,
        duplicate=outcome.duplicate,
        filename=outcome.filename,
        notes=list(outcome.notes),
    )
    return JSONResponse(status_code=200 if outcome.duplicate else 202, content=body.model_dump())


def _public(document: DocumentInfo) -> DocumentPublic:
    return DocumentPublic.model_validate(
        {**asdict(document), "aliases": list(document.aliases), "ocr_pages": list(document.ocr_pages)}
    )


@router.get("/v1/collections/{collection}/documents", response_model=DocumentList)
def list_documents(
    collection: str,
    components: ComponentsDep,
    tenant_id: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentList:
    """List a collection's documents."""
    page = documents.list_documents(
        components, tenant_id=tenant_id, collection=collection, limit=limit, offset=offset
    )
    return DocumentList(
        documents=[_public(d) for d in page.documents], total=page.total, limit=limit, offset=offset
    )


@router.get("/v1/documents/{document_id}", response_model=DocumentPublic)
def get_document(document_id: DocumentId, components: ComponentsDep, tenant_id: TenantDep) -> DocumentPublic:
    """Show one document."""
    return _public(documents.get_document(components, tenant_id=tenant_id, document_id=document_id))


@router.delete("/v1/documents/{document_id}", response_model=DeleteResponse)
def delete_document(document_id: DocumentId, components: ComponentsDep, tenant_id: TenantDep) -> DeleteResponse:
    """Delete a document, its chunks and its index entries."""
    documents.delete_document(components, tenant_id=tenant_id, document_id=document_id)
    return DeleteResponse(document_id=document_id)
