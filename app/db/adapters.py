"""The model registry's rows: LoRA adapters, and a collection's default model."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Collection, ModelAdapter


def list_adapters(session: Session) -> list[ModelAdapter]:
    return list(session.scalars(select(ModelAdapter).order_by(ModelAdapter.name)))


def get_adapter(session: Session, *, name: str) -> ModelAdapter | None:
    return session.scalar(select(ModelAdapter).where(ModelAdapter.name == name))


def add_adapter(session: Session, *, adapter: ModelAdapter) -> ModelAdapter:
    """The caller commits; a name already taken fails the commit (uq_model_adapters_name)."""
    session.add(adapter)
    return adapter


def delete_adapter(session: Session, *, adapter: ModelAdapter) -> None:
    """Remove an adapter and clear it as any collection's default (routing decides for them again)."""
    session.execute(
        update(Collection).where(Collection.default_model == adapter.name).values(default_model=None)
    )
    session.delete(adapter)


def set_default_model(session: Session, *, collection: Collection, model: str | None) -> None:
    collection.default_model = model
