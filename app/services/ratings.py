"""Ranking priors from ratings: each collection's votes (``app.rag.priors``), kept in memory and read again when
the collection's ``feedback_version`` moves (a rating given or withdrawn in any process), or once an hour, as
votes age. Retrieval weighs them against each question."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.config import FeedbackSettings
from app.db import feedback as db_feedback
from app.db.jobs import as_utc
from app.db.models import utcnow
from app.rag.priors import PriorPolicy, Vote, VoteSet
from app.services.corrections import QuestionVectors

_AGE_AGAIN = timedelta(hours=1)


def prior_policy(settings: FeedbackSettings) -> PriorPolicy:
    return PriorPolicy(
        max_shift=settings.max_rank_shift if settings.ranking else 0,
        saturation=settings.vote_saturation,
        half_life_days=settings.vote_half_life_days,
        similarity_floor=settings.vote_similarity_floor,
        similarity_full=settings.vote_similarity_full,
    )


@dataclass(frozen=True)
class _Loaded:
    version: int
    computed_at: datetime
    votes: VoteSet


class RatingPriors:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        vectors: QuestionVectors,
        settings: FeedbackSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session_factory = session_factory
        self._vectors = vectors
        self._settings = settings
        self._clock = clock
        self._loaded: dict[int, _Loaded] = {}
        self._lock = threading.Lock()

    def votes(self, collection_id: int) -> VoteSet | None:
        """The collection's live votes (blocking: one small query, more when they moved); None when ranking
        from ratings is off."""
        if not self._settings.ranking or self._settings.max_rank_shift == 0:
            return None
        now = self._clock()
        with self._session_factory() as session:
            version = db_feedback.feedback_version(session, collection_id=collection_id)
            loaded = self._loaded.get(collection_id)
            if loaded is not None and loaded.version == version and now - loaded.computed_at < _AGE_AGAIN:
                return loaded.votes
            rows = db_feedback.live_ratings(session, collection_id=collection_id)
            votes = [
                Vote(
                    rating=row.rating,
                    chunk_ids=list(row.chunk_ids or ()),
                    at=as_utc(row.created_at) or now,
                    question=self._vectors.of(row.id, row.question, row.question_vector, row.embedding_model),
                )
                for row in rows
                if row.chunk_ids
            ]
        vote_set = VoteSet(votes, now=now, half_life_days=self._settings.vote_half_life_days)
        with self._lock:
            self._loaded[collection_id] = _Loaded(version, now, vote_set)
        return vote_set
