"""Answer records: written once by the answer log's writer, read back by their tenant, pruned by age."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.db.models import AnswerRecord, Feedback
from app.db.statuses import FeedbackStatus


def insert_answers(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store a batch of records (column name → value); the caller commits."""
    if rows:
        session.execute(insert(AnswerRecord), [dict(row) for row in rows])


def get_answer(session: Session, *, tenant_id: int, query_id: str) -> AnswerRecord | None:
    return session.scalar(
        select(AnswerRecord).where(AnswerRecord.query_id == query_id, AnswerRecord.tenant_id == tenant_id)
    )


def get_answers(session: Session, *, tenant_id: int, query_ids: Sequence[str]) -> dict[str, AnswerRecord]:
    rows = session.scalars(
        select(AnswerRecord).where(AnswerRecord.tenant_id == tenant_id, AnswerRecord.query_id.in_(query_ids))
    )
    return {row.query_id: row for row in rows}


def delete_answers_before(session: Session, *, before: datetime) -> int:
    """Delete records created before ``before``, but for those with feedback not withdrawn (the feedback's
    export needs the prompt and answer they hold); returns how many. The caller commits."""
    rated = select(Feedback.query_id).where(Feedback.status != FeedbackStatus.WITHDRAWN)
    result = session.execute(
        delete(AnswerRecord).where(AnswerRecord.created_at < before, AnswerRecord.query_id.not_in(rated))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
