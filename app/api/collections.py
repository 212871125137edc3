"""List collections."""

from __future__ import annotations

from fastapi import APIRouter

from app.db import documents as db_documents
from app.deps import SessionDep, TenantDep
from app.schemas.documents import CollectionList, CollectionPublic

router = APIRouter(tags=["collections"])


@router.get("/v1/collections", response_model=CollectionList)
def list_collections(session: SessionDep, tenant_id: TenantDep) -> CollectionList:
    """List the caller's collections with their sizes."""
    summaries = db_documents.list_collections(session, tenant_id=tenant_id)
    return CollectionList(
        collections=[
            CollectionPublic(
                name=s.collection.name,
                document_count=s.document_count,
                chunk_count=s.chunk_count,
                embedding_model=s.collection.embedding_model,
                created_at=s.collection.created_at,
            )
            for s in summaries
        ]
    )
