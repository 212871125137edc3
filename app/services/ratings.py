"""Ranking priors from ratings: each collection's net votes per chunk (``app.rag.priors``), kept in memory and
read again when the collection's ``feedback_version`` moves (a rating given or withdrawn in any process), or
once an hour, as votes age."""

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
from app.rag.priors import PriorPolicy, Vote, net_votes

_AGE_AGAIN = timedelta(hours=1)


def prior_policy(settings: FeedbackSettings) -> PriorPolicy:
    return PriorPolicy(
        max_shift=settings.max_rank_shift if settings.ranking else 0,
        saturation=settings.vote_saturation,
        half_life_days=settings.vote_half_life_days,
    )


@dataclass(frozen=True)
class _Priors:
    version: int
    computed_at: datetime
    net: dict[int, float]


class RatingPriors:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: FeedbackSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._clock = clock
        self._priors: dict[int, _Priors] = {}
        self._lock = threading.Lock()

    def priors(self, collection_id: int) -> dict[int, float]:
        """Chunk id → net votes (blocking: one small query, more when votes moved); empty when ranking from
        ratings is off."""
        if not self._settings.ranking or self._settings.max_rank_shift == 0:
            return {}
        now = self._clock()
        with self._session_factory() as session:
            version = db_feedback.feedback_version(session, collection_id=collection_id)
            cached = self._priors.get(collection_id)
            if cached is not None and cached.version == version and now - cached.computed_at < _AGE_AGAIN:
                return cached.net
            votes = [
                Vote(rating=rating, chunk_ids=chunk_ids, at=as_utc(at) or now)
                for rating, chunk_ids, at in db_feedback.live_ratings(session, collection_id=collection_id)
            ]
        net = net_votes(votes, now=now, half_life_days=self._settings.vote_half_life_days)
        with self._lock:
            self._priors[collection_id] = _Priors(version, now, net)
        return net
