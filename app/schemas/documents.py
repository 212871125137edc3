"""HTTP contract for collections, documents and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.db.statuses import DocumentStatus, JobKind, JobStatus

# ingest: parse → chunk → embed → index; train: train → register.
JobStage = Literal["parse", "chunk", "embed", "index", "train", "register"]


class UploadResponse(BaseModel):
    document_id: int
    job_id: int | None
    status: DocumentStatus = Field(
        description="queued for a new document; the existing document's status for a duplicate"
    )
    duplicate: bool = False
    filename: str = Field(
        "",
        description="The name the file is stored under (control characters removed, "
        "shortened past 255 characters).",
    )
    notes: list[str] = Field(default_factory=list, description="What was changed in the upload to store it.")


class DocumentPublic(BaseModel):
    document_id: int
    collection: str
    filename: str
    aliases: list[str] = Field(description="Other filenames the same bytes were uploaded under.")
    size_bytes: int
    mime: str
    content_hash: str
    status: DocumentStatus
    title: str
    file_type: str = Field(description="What the file was read as: pdf, docx, xlsx, eml, image, … (see the README's table).")
    chunk_count: int
    metadata: dict[str, Any]
    properties: dict[str, str] = Field(
        description="What the file says about itself beyond its text: an e-mail's From, To, Cc, Date and "
        "Subject; a book's or a deck's Author."
    )
    ocr_pages: list[int] = Field(
        description="The 1-based pages whose text was read by OCR (an uploaded image is page 1); empty when none."
    )
    job_id: int | None
    error: str | None
    created_at: datetime


class DocumentList(BaseModel):
    documents: list[DocumentPublic]
    total: int
    limit: int
    offset: int


class CollectionPublic(BaseModel):
    name: str
    document_count: int
    chunk_count: int
    embedding_model: str
    default_model: str | None = Field(
        None, description="The model that answers when a request names none; null: routing decides."
    )
    created_at: datetime


class CollectionList(BaseModel):
    collections: list[CollectionPublic]


class JobPublic(BaseModel):
    job_id: int
    kind: JobKind = Field(JobKind.INGEST, description="What the job does.")
    document_id: int | None = Field(description="The document an ingest job processes; null for other kinds.")
    status: JobStatus
    stage: JobStage
    progress: float = Field(ge=0.0, le=1.0)
    error: str | None
    attempts: int
    timings: dict[str, float]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] = Field(
        default_factory=dict,
        description="What a finished job produced: train: the adapter's name and path, steps, examples, final loss.",
    )


class DeleteResponse(BaseModel):
    document_id: int
    deleted: bool = True
