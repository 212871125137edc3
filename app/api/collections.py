"""List collections, and set a collection's default model."""

from __future__ import annotations

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.deps import ComponentsDep, TenantDep
from app.schemas.documents import CollectionList, CollectionPublic
from app.schemas.models import CollectionUpdate
from app.services import documents, models
from app.services.documents import CollectionInfo

router = APIRouter(tags=["collections"])


@router.get("/v1/collections", response_model=CollectionList)
def list_collections(components: ComponentsDep, tenant_id: TenantDep) -> CollectionList:
    """List the caller's collections with their sizes."""
    return CollectionList(
        collections=[_public(c) for c in documents.list_collections(components, tenant_id=tenant_id)]
    )


@router.patch("/v1/collections/{name}", response_model=CollectionPublic)
async def update_collection(
    body: CollectionUpdate,
    components: ComponentsDep,
    tenant_id: TenantDep,
    name: str = Path(min_length=1, max_length=200),
) -> CollectionPublic:
    """Set (or clear, with null) the model that answers the collection's questions when a request names none."""
    await run_in_threadpool(
        lambda: models.set_default_model(components, tenant_id=tenant_id, collection=name, model=body.default_model)
    )
    info = await run_in_threadpool(lambda: documents.get_collection(components, tenant_id=tenant_id, name=name))
    return _public(info)


def _public(info: CollectionInfo) -> CollectionPublic:
    return CollectionPublic(
        name=info.name,
        document_count=info.document_count,
        chunk_count=info.chunk_count,
        embedding_model=info.embedding_model,
        default_model=info.default_model,
        created_at=info.created_at,
    )
