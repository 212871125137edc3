"""Feedback rows: ratings and corrections of answers, and the per-collection version that tells every process
its corrections and ranking priors have moved."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Collection, Feedback
from app.db.statuses import FeedbackStatus


def add_feedback(session: Session, *, feedback: Feedback) -> Feedback:
    """The caller commits."""
    session.add(feedback)
    session.flush()
    return feedback


def get_feedback(session: Session, *, tenant_id: int, feedback_id: int) -> Feedback | None:
    return session.scalar(select(Feedback).where(Feedback.id == feedback_id, Feedback.tenant_id == tenant_id))


def list_feedback(
    session: Session,
    *,
    tenant_id: int,
    collection_id: int | None = None,
    rating: str | None = None,
    statuses: Sequence[FeedbackStatus] = (),
    since: datetime | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> list[Feedback]:
    """Oldest first; ``after_id`` pages on."""
    query = select(Feedback).where(Feedback.tenant_id == tenant_id, Feedback.id > after_id)
    if collection_id is not None:
        query = query.where(Feedback.collection_id == collection_id)
    if rating is not None:
        query = query.where(Feedback.rating == rating)
    if statuses:
        query = query.where(Feedback.status.in_([s.value for s in statuses]))
    if since is not None:
        query = query.where(Feedback.created_at >= since)
    query = query.order_by(Feedback.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def approved_corrections(session: Session, *, collection_id: int) -> list[Feedback]:
    return list(
        session.scalars(
            select(Feedback)
            .where(Feedback.collection_id == collection_id, Feedback.status == FeedbackStatus.APPROVED)
            .order_by(Feedback.id)
        )
    )


def live_ratings(session: Session, *, collection_id: int) -> list[Feedback]:
    """Every feedback of the collection not withdrawn: each is a vote on the chunks its answer cited."""
    return list(
        session.scalars(
            select(Feedback).where(
                Feedback.collection_id == collection_id, Feedback.status != FeedbackStatus.WITHDRAWN
            )
        )
    )


def feedback_version(session: Session, *, collection_id: int) -> int:
    return int(session.scalar(select(Collection.feedback_version).where(Collection.id == collection_id)) or 0)


def bump_feedback_version(session: Session, *, collection_id: int | None) -> None:
    """In the transaction that changes the feedback: readers reload once it commits."""
    if collection_id is not None:
        session.execute(
            update(Collection)
            .where(Collection.id == collection_id)
            .values(feedback_version=Collection.feedback_version + 1)
            .execution_options(synchronize_session=False)
        )

