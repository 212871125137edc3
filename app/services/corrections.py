"""The corrections memory: approved corrections of a collection, searched with each new question.

Every process keeps each collection's approved corrections in memory and reads the collection's
``feedback_version`` from SQL with every question: an approval or a withdrawal commits a new version, so the
next question in any process reloads, and a withdrawn correction is never given again. Question vectors are
embedded once, at approval (stored in SQL), or at load when the server's embedder has changed since.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.config import FeedbackSettings
from app.db import feedback as db_feedback
from app.db.models import Feedback
from app.rag.corrections import CorrectionMatch, KnownCorrection, MatchPolicy, match_corrections
from app.rag.embedding import Embedder, Vectors
from app.rag.evidence import Correction


def vector_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class QuestionVectors:
    """Feedback questions' vectors: as stored, or embedded again (once per row) when the server's embedder is
    not the one that stored them. Blocking."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._embedded: dict[int, Vectors] = {}
        self._lock = threading.Lock()

    def embed(self, question: str) -> tuple[bytes, str]:
        """The stored form of a question's vector, and the model that made it."""
        return vector_bytes(self._embedder.embed_queries([question])[0]), self._embedder.name

    def of(self, feedback_id: int, question: str, stored: bytes | None, model: str) -> Vectors:
        if stored is not None and model == self._embedder.name:
            return np.frombuffer(stored, dtype="<f4").astype(np.float32)
        with self._lock:
            cached = self._embedded.get(feedback_id)
        if cached is None:
            cached = self._embedder.embed_queries([question])[0]
            with self._lock:
                self._embedded[feedback_id] = cached
        return cached


@dataclass(frozen=True)
class _Loaded:
    version: int
    corrections: tuple[KnownCorrection, ...]


class CorrectionMemory:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        embedder: Embedder,
        vectors: QuestionVectors,
        settings: FeedbackSettings,
    ):
        self._session_factory = session_factory
        self._embedder = embedder
        self._vectors = vectors
        self._settings = settings
        self._policy = MatchPolicy(thresholds=settings.correction_thresholds, overlap=settings.correction_overlap)
        self._loaded: dict[int, _Loaded] = {}
        self._lock = threading.Lock()

    def known(self, collection_id: int) -> tuple[KnownCorrection, ...]:
        """The collection's approved corrections as of now (blocking: one small query, more when they moved)."""
        with self._session_factory() as session:
            version = db_feedback.feedback_version(session, collection_id=collection_id)
            loaded = self._loaded.get(collection_id)
            if loaded is not None and loaded.version == version:
                return loaded.corrections
            rows = db_feedback.approved_corrections(session, collection_id=collection_id)
            corrections = tuple(self._known(row) for row in rows)
        with self._lock:
            self._loaded[collection_id] = _Loaded(version, corrections)
        return corrections

    def _known(self, row: Feedback) -> KnownCorrection:
        vector = self._vectors.of(row.id, row.question, row.question_vector, row.embedding_model)
        return KnownCorrection(feedback_id=row.id, question=row.question, text=row.correction or "", vector=vector)

    def find(self, collection_id: int, question: str) -> list[CorrectionMatch]:
        """Approved corrections of the collection that answer this question (blocking). Embeds the question only
        when the collection has any."""
        known = self.known(collection_id)
        if not known or self._settings.max_corrections == 0:
            return []
        vector = self._embedder.embed_queries([question])[0]
        return match_corrections(
            question,
            vector,
            known,
            policy=self._policy,
            limit=self._settings.max_corrections,
        )

    def source(self, collection_id: int) -> CollectionCorrections:
        return CollectionCorrections(self, collection_id, direct=self._settings.direct_answers)


class CollectionCorrections:
    """The answer flow's evidence source for one collection's corrections."""

    def __init__(self, memory: CorrectionMemory, collection_id: int, *, direct: bool) -> None:
        self._memory = memory
        self._collection_id = collection_id
        self._direct = direct

    async def evidence_for(self, question: str, language: str) -> Sequence[Correction]:
        matches = await run_in_threadpool(self._memory.find, self._collection_id, question)
        return [
            Correction(
                feedback_id=m.correction.feedback_id,
                text=m.correction.text,
                question=m.correction.question,
                score=m.similarity,
                exact=m.exact and self._direct,
            )
            for m in matches
        ]
