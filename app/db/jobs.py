"""The job queue, kept in SQL so that it survives crashes and works across processes.

A job has a kind (which handler runs it) and a payload (what that handler needs). A worker claims a job by
moving it to ``running`` under its own ``worker_id`` and keeps a heartbeat. A job whose heartbeat is older
than the lease is free to be claimed again: that is how work interrupted by a crash is picked up. A job that
failed and may be retried goes back to ``queued`` with a ``run_after`` in the future (exponential backoff with
jitter, see ``retry_delay_seconds``), and is not claimed before then.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import Document, Job, utcnow
from app.db.statuses import JobKind, JobStatus

# Kinds that run for minutes: the small-job lane leaves them to the general one.
LONG_JOB_KINDS = frozenset({JobKind.TRAIN})

# Doubling past this many failures would only be cut back to the cap (and 2.0**1100 overflows a float).
_MAX_DOUBLINGS = 60


def retry_delay_seconds(
    *,
    failed_attempts: int,
    base_seconds: float,
    cap_seconds: float,
    jitter: Literal["equal", "full"],
    rng: random.Random | None = None,
) -> float:
    """How long a job waits before its next attempt, after ``failed_attempts`` failures in a row.

    The exponential delay is ``min(cap, base * 2 ** (failed_attempts - 1))``: base, 2×base, 4×base, ...
    Equal jitter waits between half of it and all of it (never much sooner than the schedule says); full
    jitter anywhere from zero to all of it (spreads a burst of failures widest).
    """
    if failed_attempts < 1:
        raise ValueError("failed_attempts must be at least 1")
    exponential = min(cap_seconds, base_seconds * 2.0 ** min(failed_attempts - 1, _MAX_DOUBLINGS))
    draw = (rng or random).uniform
    if jitter == "full":
        return draw(0.0, exponential)
    return exponential / 2 + draw(0.0, exponential / 2)


def enqueue_job(
    session: Session,
    *,
    tenant_id: int,
    kind: JobKind,
    payload: dict[str, Any],
    document_id: int | None = None,
    stage: str = "parse",
) -> Job:
    """Add a queued job, claimable at once; the caller commits. ``document_id`` ties an ingest job to its
    document (deleting the document deletes the job) and must agree with the payload's."""
    if kind == JobKind.INGEST and (document_id is None or payload.get("document_id") != document_id):
        raise ValueError("an ingest job needs document_id, the same as its payload's")
    job = Job(
        tenant_id=tenant_id,
        kind=kind,
        payload=payload,
        document_id=document_id,
        status=JobStatus.QUEUED,
        stage=stage,
        run_after=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def _claimable(*, now: datetime, stale_before: datetime) -> ColumnElement[bool]:
    return or_(
        and_(Job.status == JobStatus.QUEUED, Job.run_after <= now),
        and_(Job.status == JobStatus.RUNNING, Job.heartbeat_at < stale_before),
    )


def claim_next_job(
    session: Session, *, worker_id: str, lease_seconds: float, max_document_bytes: int | None = None
) -> Job | None:
    """Take the oldest claimable job for ``worker_id`` and commit the claim; None when there is none. With
    ``max_document_bytes``, only a job with no document or with a document at most that large, and never one
    of the long kinds (training), which would hold the small-job lane for minutes."""
    for _ in range(5):
        now = utcnow()
        claimable = _claimable(now=now, stale_before=now - timedelta(seconds=lease_seconds))
        if max_document_bytes is not None:
            small = select(Document.id).where(Document.size_bytes <= max_document_bytes)
            claimable = and_(
                claimable,
                Job.kind.not_in([k.value for k in LONG_JOB_KINDS]),
                or_(Job.document_id.is_(None), Job.document_id.in_(small)),
            )
        query = select(Job.id).where(claimable).order_by(Job.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job_id = session.scalar(query)
        if job_id is None:
            session.rollback()
            return None
        # The WHERE repeats the claimable test, so of two workers racing for one job only one updates it.
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                attempts=Job.attempts + 1,
                heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return session.get(Job, job_id, populate_existing=True)
    return None


def report_progress(
    session: Session, *, job_id: int, worker_id: str, stage: str, progress: float, timings: dict[str, float]
) -> bool:
    """Record stage and progress; False when the job is no longer this worker's (its lease was taken over)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
        .values(stage=stage, progress=progress, heartbeat_at=utcnow(), timings=timings)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish_job(
    session: Session,
    *,
    job_id: int,
    worker_id: str,
    timings: dict[str, float],
    stage: str = "index",
    result: dict[str, Any] | None = None,
) -> bool:
    """Mark the job done if it is still this worker's; False when another worker took it over.

    ``stage`` is the last one the job went through (the heartbeat may not have written it yet)."""
    updated = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
        .values(
            status=JobStatus.DONE,
            stage=stage,
            progress=1.0,
            error=None,
            timings=timings,
            result=result or {},
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(updated.rowcount == 1)  # type: ignore[attr-defined]


def fail_job(
    session: Session,
    *,
    job_id: int,
    worker_id: str,
    error: str,
    retry: bool,
    retry_delay_seconds: float = 0.0,
) -> bool:
    """Record a failure if the job is still this worker's: a retryable one goes back to the queue, claimable
    again after ``retry_delay_seconds`` and keeping ``error`` meanwhile; the rest end the job. False when
    another worker took the job over (its outcome is not ours to write)."""
    now = utcnow()
    values: dict[str, object] = {"error": error, "worker_id": None}
    if retry:
        values.update(status=JobStatus.QUEUED, run_after=now + timedelta(seconds=retry_delay_seconds))
    else:
        values.update(status=JobStatus.FAILED, finished_at=now)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def unfinished_jobs(session: Session, *, kind: JobKind) -> list[Job]:
    """Jobs of a kind that are queued or running, of any tenant."""
    return list(
        session.scalars(select(Job).where(Job.kind == kind, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])))
    )


def unfinished_counts(session: Session) -> list[tuple[str, str, int]]:
    """(kind, status, count) of the jobs queued or running, of every tenant: the queue's depth."""
    rows = session.execute(
        select(Job.kind, Job.status, func.count())
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .group_by(Job.kind, Job.status)
    )
    return [(str(kind), str(status), int(count)) for kind, status, count in rows]


def get_job(session: Session, *, tenant_id: int, job_id: int) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
