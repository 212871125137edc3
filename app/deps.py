"""Typed dependencies: routes declare what they need; everything comes from objects built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from app.components import Components
from app.config import Settings
from app.rag.errors import NotReadyError


def get_components(request: Request) -> Components:
    components: Components | None = getattr(request.app.state, "components", None)
    if components is None:
        raise NotReadyError("the service is still starting")
    return components


ComponentsDep = Annotated[Components, Depends(get_components)]


def get_settings(components: ComponentsDep) -> Settings:
    return components.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_tenant_id(components: ComponentsDep) -> int:
    """The caller's tenant. Until API keys arrive every caller is the configured default tenant."""
    return components.default_tenant_id


TenantDep = Annotated[int, Depends(get_tenant_id)]


# Ids are 32-bit in PostgreSQL's integer columns: larger ones can name nothing, and are refused as bad input.
_MAX_ID = 2**31 - 1
DocumentId = Annotated[int, Path(ge=1, le=_MAX_ID, description="A document id.")]
JobId = Annotated[int, Path(ge=1, le=_MAX_ID, description="A job id.")]
QueryId = Annotated[str, Path(min_length=1, max_length=64, description="An answer's query_id.")]
