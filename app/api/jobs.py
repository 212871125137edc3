"""Ingestion job status."""

from __future__ import annotations

from fastapi import APIRouter

from app.db import jobs as db_jobs
from app.deps import JobId, SessionDep, TenantDep
from app.rag.errors import NotFoundError
from app.schemas.documents import JobPublic

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, session: SessionDep, tenant_id: TenantDep) -> JobPublic:
    """Show an ingestion job's status, stage and progress."""
    job = db_jobs.get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found", param="job_id")
    return JobPublic(
        job_id=job.id,
        document_id=job.document_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        error=job.error,
        attempts=job.attempts,
        timings=job.timings,
        created_at=db_jobs.as_utc(job.created_at),
        started_at=db_jobs.as_utc(job.started_at),
        finished_at=db_jobs.as_utc(job.finished_at),
    )
