"""ORM models: the store of record. Every row carries a tenant; nothing is read across tenants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.statuses import JobKind, JobStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_collections_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    embedding_model: Mapped[str] = mapped_column(String(300))
    # Bumped whenever the collection's searchable chunks change; readers reload their caches when it moves.
    index_version: Mapped[int] = mapped_column(BigInteger, default=0)
    # The model (base or adapter name) that answers when a request names none; NULL: routing decides.
    default_model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # Bumped whenever feedback that changes answers moves (a correction approved or withdrawn, a rating given
    # or withdrawn): every process reads it per question and reloads its corrections and ranking priors.
    feedback_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Document(Base):
    __tablename__ = "documents"
    # AUTOINCREMENT: SQLite would otherwise reuse a deleted document's id, and with it its chunk ids.
    __table_args__ = (
        UniqueConstraint("collection_id", "content_hash", name="uq_documents_collection_hash"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str] = mapped_column(String(200))
    file_type: Mapped[str] = mapped_column(String(20))
    # queued -> processing -> ready | failed
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    title: Mapped[str] = mapped_column(Text, default="")
    # Other filenames the same bytes were uploaded under in this collection (a duplicate upload adds one).
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    text_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # 1-based pages whose text came from OCR (an image is page 1), and what the file says about itself beyond
    # its text (an e-mail's From, To, Date and Subject): both set when the document is parsed.
    ocr_pages: Mapped[list[int]] = mapped_column(JSON, default=list)
    properties: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_document_ordinal", "document_id", "ordinal", unique=True),)

    # Deterministic: document_id << CHUNK_ID_BITS | ordinal, so re-running a job rewrites the same ids.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(Text, default="")
    # The first chunk of the same section: lets answers widen a hit to its section later.
    parent_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    token_count: Mapped[int] = mapped_column(Integer)
    # Lexical tokens (jieba for Chinese), space-joined: the BM25 index is rebuilt from these without re-tokenizing.
    terms: Mapped[str] = mapped_column(Text, default="")
    # float32 little-endian; lets the vector index be rebuilt without re-embedding.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Job(Base):
    """One unit of background work of some kind, claimed and leased by a worker and retried with backoff."""

    __tablename__ = "jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)  # a deleted job's id is never handed out again

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # A JobKind value, kept a plain string: a worker that meets a kind newer than itself must still load the
    # row, to fail that job with a clear error instead of failing to claim anything.
    kind: Mapped[str] = mapped_column(String(20), default=JobKind.INGEST)
    # What the kind's handler needs, e.g. ingest: {"document_id": 7}.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Ingest jobs only: deleting the document deletes its jobs, and a document's latest job is found by it.
    document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # Stored as the member's value (not its name) in a VARCHAR, as before the enum existed.
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            native_enum=False,
            length=20,
            values_callable=lambda members: [m.value for m in members],
        ),
        default=JobStatus.QUEUED,
        index=True,
    )
    stage: Mapped[str] = mapped_column(String(20), default="parse")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The last failure; kept while a retry waits, cleared when the job is done.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # What a finished job produced, for its kind (train: the adapter, its steps and final loss).
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Not claimable before this moment: a failed attempt's backoff, or now for a new job.
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnswerRecord(Base):
    """One answer as it was given, streamed or not, from any endpoint: what was asked, what the model was sent
    and wrote, what wenda checked and returned. Feedback, corrections and fine-tuning export read it."""

    __tablename__ = "answers"
    __table_args__ = (Index("ix_answers_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    query_id: Mapped[str] = mapped_column(String(64), unique=True)  # uq_answers_query_id
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL"), nullable=True, index=True
    )
    collection_name: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(20))  # ask | chat | cli
    # answered | refused | cancelled (the client went away mid-stream) | failed (an error ended it)
    status: Mapped[str] = mapped_column(String(20))
    question: Mapped[str] = mapped_column(Text)
    standalone_question: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(300), default="")
    template: Mapped[str] = mapped_column(String(100), default="")
    # sha256 of the template's files as they were when the answer was given
    template_version: Mapped[str] = mapped_column(String(64), default="")
    # The evidence retrieved, in rank order: kind, ids, score and whether it was packed into the prompt.
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The rendered messages exactly as sent to the model (the fine-tuning export needs them verbatim).
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    raw_answer: Mapped[str] = mapped_column(Text, default="")
    answer: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    grounded: Mapped[bool] = mapped_column(Boolean, default=False)
    refusal_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    refusal_detail: Mapped[str] = mapped_column(Text, default="")
    usage: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    passages_used: Mapped[int] = mapped_column(Integer, default=0)
    passages_dropped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Which model answered and why: {"model", "reason", "score"?, "cause"?, "adapter"?} (app.rag.routing).
    route: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The facts supplied (clock, calendar, calculator, tools), the check of the answer against them (with
    # notes on tools that gave nothing), and the asker's time zone.
    facts: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    fact_check: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAdapter(Base):
    """A LoRA adapter in the model registry. Models are the server's, not a tenant's: every tenant may ask
    any of them (registering and removing becomes an admin's right once API keys exist)."""

    __tablename__ = "model_adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # uq_model_adapters_name
    path: Mapped[str] = mapped_column(Text)
    # The base model as the adapter's adapter_config.json names it.
    base_model: Mapped[str] = mapped_column(String(300))
    rank: Mapped[int] = mapped_column(Integer)
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    examples: Mapped[list[str]] = mapped_column(JSON, default=list)
    # api (POST /v1/models/adapters) | settings (models.adapters, registered at start-up)
    source: Mapped[str] = mapped_column(String(20), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Feedback(Base):
    """A rating of one answer, with an optional correction of it. A correction is used (as evidence for later
    questions, and in training exports) only once approved; withdrawing any feedback ends all its uses."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_tenant_created", "tenant_id", "created_at"),
        Index("ix_feedback_collection_status", "collection_id", "status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), nullable=True
    )
    # The answer rated (answers.query_id). No foreign key: the answer log writes its rows off the request
    # path, so feedback may arrive before the row; answers with live feedback are kept past retention.
    query_id: Mapped[str] = mapped_column(String(64), index=True)
    rating: Mapped[str] = mapped_column(String(10))  # up | down
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    # rating (no correction) | pending (a correction awaiting approval) | approved | withdrawn
    status: Mapped[str] = mapped_column(String(20))
    # The question the answer was to (the standalone question), copied so that the corrections memory reads
    # one table; and the chunks the answer cited, which the rating moves up or down in ranking.
    question: Mapped[str] = mapped_column(Text)
    chunk_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # An approved correction's question embedded (float32 little-endian) by embedding_model.
    question_vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
