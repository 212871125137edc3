"""The ingestion job queue, kept in SQL so that it survives crashes and works across processes.

A worker claims a job by moving it to ``running`` under its own ``worker_id`` and keeps a heartbeat. A job
whose heartbeat is older than the lease is free to be claimed again: that is how work interrupted by a crash
is picked up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import Job, utcnow


def _claimable(*, stale_before: datetime) -> ColumnElement[bool]:
    return or_(Job.status == "queued", and_(Job.status == "running", Job.heartbeat_at < stale_before))


def claim_next_job(session: Session, *, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the oldest claimable job for ``worker_id`` and commit the claim; None when there is none."""
    for _ in range(5):
        now = utcnow()
        claimable = _claimable(stale_before=now - timedelta(seconds=lease_seconds))
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
                status="running",
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
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(stage=stage, progress=progress, heartbeat_at=utcnow(), timings=timings)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish_job(session: Session, *, job_id: int, worker_id: str, timings: dict[str, float]) -> bool:
    """Mark the job done if it is still this worker's; False when another worker took it over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(status="done", stage="index", progress=1.0, error=None, timings=timings, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def fail_job(session: Session, *, job_id: int, worker_id: str, error: str, retry: bool) -> bool:
    """Record a failure if the job is still this worker's: a retryable one goes back to the queue, the rest
    end the job. False when another worker took the job over (its outcome is not ours to write)."""
    values: dict[str, object] = {"error": error, "worker_id": None}
    values.update({"status": "queued"} if retry else {"status": "failed", "finished_at": utcnow()})
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def get_job(session: Session, *, tenant_id: int, job_id: int) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
