"""The feedback use cases: rate an answer and correct it, review, approve and withdraw, export for training.

Feedback is stored beside the answer record it rates (``feedback``, keyed by the answer's ``query_id``); a
tenant sees and rates only its own answers. Every change that alters later answers (a correction approved or
withdrawn, a rating given or withdrawn) bumps the collection's ``feedback_version`` in the same transaction,
which is how the corrections memory and the ranking priors of every process know to reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from app import metrics
from app.components import Components
from app.db import documents as db_documents
from app.db import feedback as db_feedback
from app.db.jobs import as_utc
from app.db.models import Feedback, utcnow
from app.db.statuses import FeedbackStatus
from app.rag.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.queries import QueryRecord

Rating = Literal["up", "down"]
ExportFormat = Literal["sft", "dpo"]

# The OpenAI-compatible endpoint's response id is the query id behind this prefix.
_COMPLETION_PREFIX = "chatcmpl-"
_EXPORT_BATCH = 200


@dataclass(frozen=True)
class FeedbackInfo:
    id: int
    query_id: str
    collection: str | None
    rating: str
    correction: str | None
    comment: str
    status: str
    question: str
    created_at: datetime
    approved_at: datetime | None
    withdrawn_at: datetime | None


def query_id_of(reference: str) -> str:
    """A query id, or the chat completion id that carries one."""
    reference = reference.strip()
    return reference.removeprefix(_COMPLETION_PREFIX)


def _info(row: Feedback, collection: str | None) -> FeedbackInfo:
    return FeedbackInfo(
        id=row.id,
        query_id=row.query_id,
        collection=collection,
        rating=row.rating,
        correction=row.correction,
        comment=row.comment,
        status=row.status,
        question=row.question,
        created_at=as_utc(row.created_at) or utcnow(),
        approved_at=as_utc(row.approved_at),
        withdrawn_at=as_utc(row.withdrawn_at),
    )


def _cited_chunks(record: QueryRecord) -> list[int]:
    return sorted(
        {
            int(c["chunk_id"])
            for c in record.citations
            if c.get("kind", "document") == "document" and c.get("chunk_id") is not None
        }
    )


def submit_feedback(
    components: Components,
    *,
    tenant_id: int,
    query_id: str,
    rating: Rating,
    correction: str | None = None,
    comment: str = "",
) -> FeedbackInfo:
    """Rate an answer, optionally correcting it (blocking). An unknown query id, or another tenant's, is a
    404. A correction waits for approval unless ``feedback.auto_approve``."""
    query_id = query_id_of(query_id)
    record = components.answer_log.get(tenant_id=tenant_id, query_id=query_id)
    correction = correction.strip() if correction is not None else None
    if correction == "":
        raise InvalidInputError("a correction must say something; leave it out to only rate", param="correction")
    question = record.standalone_question or record.question
    # Every rating's question is embedded: its votes count for similar questions, its correction answers them.
    vector, embedding_model = components.question_vectors.embed(question)
    status = FeedbackStatus.RATING
    approved_at = None
    if correction is not None:
        status = FeedbackStatus.PENDING
        if components.settings.feedback.auto_approve:
            status = FeedbackStatus.APPROVED
            approved_at = utcnow()
    with components.session_factory() as session:
        row = db_feedback.add_feedback(
            session,
            feedback=Feedback(
                tenant_id=tenant_id,
                collection_id=record.collection_id,
                query_id=query_id,
                rating=rating,
                correction=correction,
                comment=comment.strip(),
                status=status,
                question=question,
                chunk_ids=_cited_chunks(record),
                question_vector=vector,
                embedding_model=embedding_model,
                approved_at=approved_at,
            ),
        )
        db_feedback.bump_feedback_version(session, collection_id=row.collection_id)
        session.commit()
        metrics.FEEDBACK.labels(rating, "yes" if correction is not None else "no").inc()
        return _info(row, record.collection)


def _collection_names(components: Components, tenant_id: int) -> dict[int, str]:
    with components.session_factory() as session:
        return {s.collection.id: s.collection.name for s in db_documents.list_collections(session, tenant_id=tenant_id)}


def _collection_id(components: Components, tenant_id: int, name: str) -> int:
    with components.session_factory() as session:
        collection = db_documents.get_collection(session, tenant_id=tenant_id, name=name)
        if collection is None:
            raise NotFoundError(f"collection {name!r} not found", param="collection")
        return collection.id


def list_feedback(
    components: Components,
    *,
    tenant_id: int,
    collection: str | None = None,
    rating: Rating | None = None,
    status: str | None = None,
    since: datetime | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[FeedbackInfo]:
    """The tenant's feedback, oldest first, from the id after ``after`` on (blocking)."""
    collection_id = _collection_id(components, tenant_id, collection) if collection else None
    names = _collection_names(components, tenant_id)
    with components.session_factory() as session:
        rows = db_feedback.list_feedback(
            session,
            tenant_id=tenant_id,
            collection_id=collection_id,
            rating=rating,
            statuses=(FeedbackStatus(status),) if status else (),
            since=since,
            after_id=after,
            limit=limit,
        )
        return [_info(row, names.get(row.collection_id or 0)) for row in rows]


def _row(session: Session, tenant_id: int, feedback_id: int) -> Feedback:
    row = db_feedback.get_feedback(session, tenant_id=tenant_id, feedback_id=feedback_id)
    if row is None:
        raise NotFoundError(f"feedback {feedback_id} not found", param="feedback_id")
    return row


def get_feedback(components: Components, *, tenant_id: int, feedback_id: int) -> FeedbackInfo:
    with components.session_factory() as session:
        row = _row(session, tenant_id, feedback_id)
        return _info(row, _collection_names(components, tenant_id).get(row.collection_id or 0))


def approve_feedback(components: Components, *, tenant_id: int, feedback_id: int) -> FeedbackInfo:
    """Approve a correction: from the next question on, in every process, it is evidence for the question it
    corrects and its rewordings (blocking). Approving twice changes nothing."""
    with components.session_factory() as session:
        row = _row(session, tenant_id, feedback_id)
        if row.correction is None:
            raise ConflictError(f"feedback {feedback_id} is a rating without a correction: nothing to approve")
        if row.status == FeedbackStatus.WITHDRAWN:
            raise ConflictError(f"feedback {feedback_id} was withdrawn; post the correction again to use it")
        if row.status == FeedbackStatus.PENDING:
            row.status = FeedbackStatus.APPROVED
            row.approved_at = utcnow()
            db_feedback.bump_feedback_version(session, collection_id=row.collection_id)
            session.commit()
            metrics.FEEDBACK_REVIEWS.labels("approved").inc()
        return _info(row, _collection_names(components, tenant_id).get(row.collection_id or 0))


def withdraw_feedback(components: Components, *, tenant_id: int, feedback_id: int) -> None:
    """Withdraw a rating or correction: its correction is no longer given (the next question in any process
    sees that), its votes leave the ranking, and exports leave it out. Withdrawing twice changes nothing."""
    with components.session_factory() as session:
        row = _row(session, tenant_id, feedback_id)
        if row.status == FeedbackStatus.WITHDRAWN:
            return
        row.status = FeedbackStatus.WITHDRAWN
        row.withdrawn_at = utcnow()
        db_feedback.bump_feedback_version(session, collection_id=row.collection_id)
        session.commit()
    metrics.FEEDBACK_REVIEWS.labels("withdrawn").inc()


def _messages(record: QueryRecord) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in record.messages]


def export_line(row: Feedback, record: QueryRecord, export_format: ExportFormat) -> dict[str, Any] | None:
    """One training example from one feedback and the answer it rates, or None when it makes none.

    SFT (TRL's conversational format): ``messages`` as they were sent (the system prompt, the question with its
    numbered evidence) and, as the assistant's turn, the approved correction or the up-voted answer as the
    model wrote it (its markers number the evidence in that prompt). DPO (TRL's conversational preference
    format): the same ``prompt``, the approved correction ``chosen``, the answer given ``rejected``."""
    if not record.messages:
        return None  # the request failed before a prompt existed
    corrected = row.status == FeedbackStatus.APPROVED and row.correction
    if export_format == "sft":
        if corrected:
            target = row.correction
        elif row.rating == "up" and row.correction is None and record.grounded:
            target = record.raw_answer.strip()
        else:
            return None
        return {"messages": [*_messages(record), {"role": "assistant", "content": target}]}
    if not corrected or not record.answer.strip() or record.answer.strip() == (row.correction or "").strip():
        return None
    return {
        "prompt": _messages(record),
        "chosen": [{"role": "assistant", "content": row.correction}],
        "rejected": [{"role": "assistant", "content": record.answer}],
    }


def export_feedback(
    components: Components,
    *,
    tenant_id: int,
    export_format: ExportFormat,
    collection: str | None = None,
    since: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Training examples from the tenant's feedback, oldest first, read in batches (blocking)."""
    if export_format not in ("sft", "dpo"):
        raise InvalidInputError("format is sft or dpo", param="format")
    collection_id = _collection_id(components, tenant_id, collection) if collection else None
    after = 0
    while True:
        with components.session_factory() as session:
            rows = db_feedback.list_feedback(
                session,
                tenant_id=tenant_id,
                collection_id=collection_id,
                statuses=(FeedbackStatus.RATING, FeedbackStatus.APPROVED),
                since=since,
                after_id=after,
                limit=_EXPORT_BATCH,
            )
        if not rows:
            return
        after = rows[-1].id
        records = components.answer_log.get_many(tenant_id=tenant_id, query_ids=[r.query_id for r in rows])
        for row in rows:
            record = records.get(row.query_id)
            if record is not None and (line := export_line(row, record, export_format)) is not None:
                yield line
