"""List collections."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ComponentsDep, TenantDep
from app.schemas.documents import CollectionList, CollectionPublic
from app.services import documents

router = APIRouter(tags=["collections"])


@router.get("/v1/collections", response_model=CollectionList)
def list_collections(components: ComponentsDep, tenant_id: TenantDep) -> CollectionList:
    """List the caller's collections with their sizes."""
    return CollectionList(
        collections=[
            CollectionPublic(
                name=c.name,
                document_count=c.document_count,
                chunk_count=c.chunk_count,
                embedding_model=c.embedding_model,
                created_at=c.created_at,
            )
            for c in documents.list_collections(components, tenant_id=tenant_id)
        ]
    )
