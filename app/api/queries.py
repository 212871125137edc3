"""Answer records, read back by their query_id."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.deps import ComponentsDep, QueryId, TenantDep
from app.schemas.ask import QueryPublic

router = APIRouter(tags=["answers"])


@router.get("/v1/queries/{query_id}", response_model=QueryPublic)
def get_query(query_id: QueryId, components: ComponentsDep, tenant_id: TenantDep) -> QueryPublic:
    """Show an answer as it was recorded: question, evidence, messages sent, raw and checked answer."""
    record = components.answer_log.get(tenant_id=tenant_id, query_id=query_id)
    return QueryPublic.model_validate(asdict(record))
