"""Job status."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.deps import ComponentsDep, JobId, TenantDep
from app.schemas.documents import JobPublic
from app.services import documents

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, components: ComponentsDep, tenant_id: TenantDep) -> JobPublic:
    """Show a job's status, stage and progress."""
    return JobPublic.model_validate(asdict(documents.get_job(components, tenant_id=tenant_id, job_id=job_id)))
