"""Feedback on answers: rate and correct, review, approve, withdraw, export as training data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.deps import ComponentsDep, TenantDep
from app.schemas.feedback import FeedbackList, FeedbackPublic, FeedbackRequest, FeedbackStatusName
from app.services import feedback

router = APIRouter(tags=["feedback"])

FeedbackId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A feedback id.")]
CollectionFilter = Annotated[str | None, Query(min_length=1, max_length=200, description="Only this collection.")]
SinceFilter = Annotated[datetime | None, Query(description="Only feedback given at or after this time (ISO 8601).")]


@router.post("/v1/feedback", response_model=FeedbackPublic, status_code=201)
async def give_feedback(body: FeedbackRequest, components: ComponentsDep, tenant_id: TenantDep) -> FeedbackPublic:
    """Rate an answer up or down, optionally with a correction (used once approved). 404: no such answer."""
    info = await run_in_threadpool(
        partial(
            feedback.submit_feedback,
            components,
            tenant_id=tenant_id,
            query_id=body.query_id,
            rating=body.rating,
            correction=body.correction,
            comment=body.comment,
        )
    )
    return FeedbackPublic.model_validate(asdict(info))


@router.get("/v1/feedback", response_model=FeedbackList)
def list_feedback(
    components: ComponentsDep,
    tenant_id: TenantDep,
    collection: CollectionFilter = None,
    rating: Literal["up", "down"] | None = None,
    status: FeedbackStatusName | None = None,
    since: SinceFilter = None,
    after: Annotated[int, Query(ge=0, description="Only feedback with a larger id: the next page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FeedbackList:
    """Feedback to review, oldest first; page on with ``after`` = the last id seen."""
    found = feedback.list_feedback(
        components,
        tenant_id=tenant_id,
        collection=collection,
        rating=rating,
        status=status,
        since=since,
        after=after,
        limit=limit,
    )
    return FeedbackList(data=[FeedbackPublic.model_validate(asdict(info)) for info in found])


@router.get(
    "/v1/feedback/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "One training example per line."}},
)
def export_feedback(
    components: ComponentsDep,
    tenant_id: TenantDep,
    export_format: Annotated[Literal["sft", "dpo"], Query(alias="format", description="sft or dpo.")],
    collection: CollectionFilter = None,
    since: SinceFilter = None,
) -> StreamingResponse:
    """Training data as JSONL in TRL's conversational formats: sft (``messages``: the prompt as sent, then the
    approved correction or the up-voted answer) or dpo (``prompt``, ``chosen``: the correction, ``rejected``:
    the answer given)."""
    lines = feedback.export_feedback(
        components, tenant_id=tenant_id, export_format=export_format, collection=collection, since=since
    )
    first = next(lines, None)  # an unknown collection fails here, as a 404, not mid-stream

    def body() -> Iterator[str]:
        if first is None:
            return
        yield json.dumps(first, ensure_ascii=False) + "\n"
        for line in lines:
            yield json.dumps(line, ensure_ascii=False) + "\n"

    filename = f"wenda-feedback-{export_format}.jsonl"
    return StreamingResponse(
        body(),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/v1/feedback/{feedback_id}", response_model=FeedbackPublic)
def get_feedback(feedback_id: FeedbackId, components: ComponentsDep, tenant_id: TenantDep) -> FeedbackPublic:
    return FeedbackPublic.model_validate(
        asdict(feedback.get_feedback(components, tenant_id=tenant_id, feedback_id=feedback_id))
    )


@router.post("/v1/feedback/{feedback_id}/approve", response_model=FeedbackPublic)
async def approve_feedback(feedback_id: FeedbackId, components: ComponentsDep, tenant_id: TenantDep) -> FeedbackPublic:
    """Approve a correction: from the next question on it answers the question it corrects and rewordings of it.
    409: a rating without a correction, or one withdrawn."""
    info = await run_in_threadpool(
        partial(feedback.approve_feedback, components, tenant_id=tenant_id, feedback_id=feedback_id)
    )
    return FeedbackPublic.model_validate(asdict(info))


@router.delete("/v1/feedback/{feedback_id}", status_code=204)
def withdraw_feedback(feedback_id: FeedbackId, components: ComponentsDep, tenant_id: TenantDep) -> Response:
    """Withdraw a rating or correction: it stops being used at once, in every process."""
    feedback.withdraw_feedback(components, tenant_id=tenant_id, feedback_id=feedback_id)
    return Response(status_code=204)
