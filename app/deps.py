"""Typed dependencies: routes declare what they need; everything comes from objects built in the lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import documents as db_documents
from app.rag.errors import NotReadyError
from app.services import Services


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReadyError("the service is still starting")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant_id(session: SessionDep, settings: SettingsDep) -> int:
    """The caller's tenant. Until API keys arrive every caller is the configured default tenant."""
    tenant = db_documents.get_or_create_tenant(session, name=settings.default_tenant)
    session.commit()
    return tenant.id


TenantDep = Annotated[int, Depends(get_tenant_id)]


# Ids are 32-bit in PostgreSQL's integer columns: larger ones can name nothing, and are refused as bad input.
_MAX_ID = 2**31 - 1
DocumentId = Annotated[int, Path(ge=1, le=_MAX_ID, description="A document id.")]
JobId = Annotated[int, Path(ge=1, le=_MAX_ID, description="A job id.")]
