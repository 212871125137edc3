"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.services import health as health_service

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up. Touches nothing else, the database included: a database outage is not a reason to
    restart the process."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Whether requests can be served; 503 names the parts that are not."""
    # Ready: start-up finished (indexes reconciled, the chat model prepared), the database answers, the index
    # holds every ready chunk and the chat model's backend answers.
    if not getattr(request.app.state, "ready", False):
        checks = getattr(request.app.state, "startup_checks", None) or {"startup": "in progress"}
        return JSONResponse({"status": "starting", "checks": checks}, status_code=503)
    report = await health_service.readiness(request.app.state.components, request.app.state.index_check)
    body = {"status": "ready" if report.ready else "not_ready", "checks": report.checks}
    headers = {} if report.ready else {"Retry-After": str(report.retry_after)}
    return JSONResponse(body, status_code=200 if report.ready else 503, headers=headers)
