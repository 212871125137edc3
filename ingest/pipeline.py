"""One ingestion job through its stages: parse → chunk → embed → index.

Re-running a job is always safe: chunk ids are deterministic, SQL rows are replaced, and the vector index
upserts by id. So a job interrupted anywhere is simply run again from the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.config import ChunkingSettings
from app.db import documents as db_documents
from app.db.documents import ChunkRow
from app.db.models import Document
from app.rag.embedding import Embedder
from app.rag.errors import DocumentTooLargeError
from app.rag.lexical import tokenize
from app.rag.types import FileType
from app.rag.vector_store import IndexCorruptError, VectorStore
from ingest.chunking import passage_text, split_document
from ingest.parse_limits import parse_in_subprocess
from ingest.reconcile import reconcile_collection

logger = logging.getLogger(__name__)

# Share of a job's progress at which each stage starts; embedding dominates the time.
STAGE_START = {"parse": 0.0, "chunk": 0.1, "embed": 0.2, "index": 0.95}

ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class IngestOutcome:
    chunk_count: int
    timings: dict[str, float]


class DocumentGoneError(Exception):
    """The document was deleted while its job ran."""


class IngestPipeline:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        embedder: Embedder,
        store: VectorStore,
        upload_dir: Path,
        chunking: ChunkingSettings,
        parse_timeout_seconds: float,
        parse_memory_mb: int,
        embed_batch_size: int = 32,
    ) -> None:
        self._session_factory = session_factory
        self._embedder = embedder
        self._store = store
        self._upload_dir = upload_dir
        self._chunking = chunking
        self._parse_timeout = parse_timeout_seconds
        self._parse_memory_mb = parse_memory_mb
        self._batch = embed_batch_size

    def run(self, document_id: int, progress: ProgressCallback) -> IngestOutcome:
        timings: dict[str, float] = {}
        with self._session_factory() as session:
            document = self._document(session, document_id)
            file_type = FileType(document.file_type)
            content_hash = document.content_hash

        progress("parse", STAGE_START["parse"])
        began = time.perf_counter()
        data = (self._upload_dir / content_hash).read_bytes()
        parse_share = STAGE_START["chunk"] - STAGE_START["parse"]

        def pages_done(done: int, total: int) -> None:
            # OCR reports each page it has read; the parse stage's share of the bar moves with them.
            progress("parse", STAGE_START["parse"] + parse_share * min(done, total) / max(total, 1))

        parsed = parse_in_subprocess(
            data,
            file_type,
            timeout_seconds=self._parse_timeout,
            memory_mb=self._parse_memory_mb,
            on_pages=pages_done,
        )
        timings["parse"] = time.perf_counter() - began

        limits = self._chunking
        if len(parsed.text) > limits.max_document_characters:
            raise DocumentTooLargeError(
                f"the document's text has {len(parsed.text):,} characters, over the limit of "
                f"{limits.max_document_characters:,} (setting chunking.max_document_characters); "
                "split it into smaller files"
            )
        progress("chunk", STAGE_START["chunk"])
        began = time.perf_counter()
        drafts = split_document(
            parsed,
            count_tokens=self._embedder.count_tokens,
            chunk_tokens=min(self._chunking.chunk_tokens, self._embedder.max_tokens - 64),
            overlap_tokens=self._chunking.overlap_tokens,
        )
        if len(drafts) > limits.max_document_chunks:
            raise DocumentTooLargeError(
                f"the document would be cut into {len(drafts):,} chunks, over the limit of "
                f"{limits.max_document_chunks:,} (setting chunking.max_document_chunks); split it into "
                "smaller files"
            )
        passages = [passage_text(title=parsed.title, section=d.section, text=d.text) for d in drafts]
        terms = [" ".join(tokenize(p)) for p in passages]
        timings["chunk"] = time.perf_counter() - began

        progress("embed", STAGE_START["embed"])
        began = time.perf_counter()
        batches = []
        for i in range(0, len(passages), self._batch):
            batches.append(self._embedder.embed_passages(passages[i : i + self._batch]))
            done = min(i + self._batch, len(passages)) / max(len(passages), 1)
            progress("embed", STAGE_START["embed"] + done * (STAGE_START["index"] - STAGE_START["embed"]))
        vectors = np.concatenate(batches) if batches else np.zeros((0, self._embedder.dim), dtype=np.float32)
        timings["embed"] = time.perf_counter() - began

        progress("index", STAGE_START["index"])
        began = time.perf_counter()
        first_of_section: dict[str, int] = {}
        rows = []
        for draft, term_text, vector in zip(drafts, terms, vectors, strict=True):
            rows.append(
                ChunkRow(
                    ordinal=draft.ordinal,
                    text=draft.text,
                    start=draft.start,
                    end=draft.end,
                    section=draft.section,
                    parent_ordinal=first_of_section.setdefault(draft.section, draft.ordinal),
                    token_count=draft.token_count,
                    terms=term_text,
                    embedding=vector.tobytes(),
                )
            )
        with self._session_factory() as session:
            document = self._document(session, document_id)
            chunk_ids = db_documents.replace_chunks(session, document=document, rows=rows)
            db_documents.record_parsed(
                session,
                document=document,
                title=parsed.title,
                text_length=len(parsed.text),
                ocr_pages=list(parsed.ocr_pages),
                properties=_properties(parsed.metadata),
            )
            collection_id = document.collection_id
            session.commit()
        # SQL first, then the index, then "ready": a crash in between leaves extra ids in the index,
        # which retrieval ignores and start-up reconciliation removes.
        if rows:
            try:
                self._store.add(collection_id, chunk_ids, vectors)
            except IndexCorruptError:
                logger.warning("index of collection %s unreadable; rebuilding it from SQL", collection_id)
                reconcile_collection(self._session_factory, self._store, collection_id)
                self._store.add(collection_id, chunk_ids, vectors)
            with self._session_factory() as session:
                if db_documents.get_document_for_job(session, document_id=document_id) is None:
                    # Deleted while we wrote the index: its removal found nothing to remove, so undo our write.
                    self._store.remove(collection_id, chunk_ids)
                    raise DocumentGoneError(f"document {document_id} was deleted during indexing")
        timings["index"] = time.perf_counter() - began
        return IngestOutcome(chunk_count=len(rows), timings=timings)

    @staticmethod
    def _document(session: Session, document_id: int) -> Document:
        document = db_documents.get_document_for_job(session, document_id=document_id)
        if document is None:
            raise DocumentGoneError(f"document {document_id} no longer exists")
        return document


def _properties(metadata: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A parser's (name, value) pairs as one value per name: a book's several authors joined by commas."""
    joined: dict[str, str] = {}
    for name, value in metadata:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined
