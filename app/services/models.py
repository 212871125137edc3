"""The model registry's use cases: list the base model and its LoRA adapters, register and remove adapters, set
a collection's default model; and the registry itself, the adapter list every API process reads from SQL.

Registration checks an adapter's files against the base model (``app.rag.adapters``) and has the backend load
it before the row is written, so a registered adapter is one that was served at least once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.components import Components
from app.components import base_model_names as build_base_model_names
from app.config import AdapterSettings
from app.db import adapters as db_adapters
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.models import ModelAdapter
from app.db.statuses import JobKind
from app.rag.adapters import AdapterSpec, check_adapter_name, inspect_adapter
from app.rag.errors import (
    AdapterRejectedError,
    AdapterUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from app.rag.training_data import check_sft_file
from app.services.documents import JobInfo, get_job

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # base | adapter
    parent: str | None
    status: str  # ready | unavailable (its circuit breaker is open) | probing (half-open)
    breaker: str
    created_at: datetime | None
    path: str | None = None
    description: str = ""
    examples: tuple[str, ...] = ()
    rank: int | None = None
    target_modules: tuple[str, ...] = ()
    base_model: str | None = None


_STATUS_OF_BREAKER = {"closed": "ready", "open": "unavailable", "half-open": "probing"}


def _adapter_info(components: Components, spec: AdapterSpec) -> ModelInfo:
    breaker = components.router.breaker_state(spec.name).value
    return ModelInfo(
        name=spec.name,
        kind="adapter",
        parent=components.router.base_model,
        status=_STATUS_OF_BREAKER[breaker],
        breaker=breaker,
        created_at=components.adapters.created_at(spec.name),
        path=spec.path,
        description=spec.description,
        examples=spec.examples,
        rank=spec.rank,
        target_modules=spec.target_modules,
        base_model=spec.base_model,
    )


def list_models(components: Components) -> list[ModelInfo]:
    """The base model, then every adapter (blocking: reads the registry)."""
    components.adapters.refresh(force=True)
    base = ModelInfo(
        name=components.router.base_model,
        kind="base",
        parent=None,
        status="ready",
        breaker="closed",
        created_at=None,
    )
    return [base, *(_adapter_info(components, spec) for spec in components.adapters.adapters())]


def base_model_names(components: Components) -> list[str]:
    """What an adapter's config may call our base model."""
    return [components.router.base_model, *build_base_model_names(components.settings)]


def _inspect(
    components: Components, *, name: str, path: Path, description: str, examples: Sequence[str]
) -> AdapterSpec:
    check_adapter_name(name, base_model=components.router.base_model)
    return inspect_adapter(
        path,
        name=name,
        base_names=base_model_names(components),
        max_rank=components.settings.models.max_lora_rank,
        base_shapes=components.llm.base_projection_shapes(),
        description=description.strip(),
        examples=[e.strip() for e in examples if e.strip()],
    )


async def register_adapter(
    components: Components, *, name: str, path: str, description: str = "", examples: Sequence[str] = ()
) -> ModelInfo:
    """Check the adapter, have the backend load it, then record it. 422 names the mismatch; 409 a name taken."""
    await run_in_threadpool(components.adapters.refresh, force=True)
    if components.router.serves(name):
        raise ConflictError(f"a model named {name!r} is already registered", param="name")
    # Reading the weights is file I/O and a little CPU: off the event loop.
    spec = await run_in_threadpool(
        partial(_inspect, components, name=name, path=Path(path), description=description, examples=examples)
    )
    try:
        await components.llm.load_adapter(spec)
    except AdapterUnavailableError as error:
        raise AdapterRejectedError(error.message, param="path") from error
    try:
        await run_in_threadpool(_insert, components, spec, "api")
    except IntegrityError as error:  # registered by another process meanwhile
        raise ConflictError(f"a model named {name!r} is already registered", param="name") from error
    await run_in_threadpool(components.adapters.refresh, force=True)
    logger.info("adapter %s registered from %s (rank %d, %s)", name, path, spec.rank, ", ".join(spec.target_modules))
    return _adapter_info(components, spec)


def _insert(components: Components, spec: AdapterSpec, source: str) -> None:
    with components.session_factory() as session:
        db_adapters.add_adapter(session, adapter=_row(spec, source))
        session.commit()


def _row(spec: AdapterSpec, source: str) -> ModelAdapter:
    return ModelAdapter(**spec.stored_fields(), source=source)


async def remove_adapter(components: Components, *, name: str) -> None:
    await run_in_threadpool(_delete, components, name)
    await components.llm.unload_adapter(name)
    await run_in_threadpool(components.adapters.refresh, force=True)
    logger.info("adapter %s removed", name)


def _delete(components: Components, name: str) -> None:
    with components.session_factory() as session:
        row = db_adapters.get_adapter(session, name=name)
        if row is None:
            raise NotFoundError(f"adapter {name!r} not found", param="name")
        db_adapters.delete_adapter(session, adapter=row)
        session.commit()


def set_default_model(components: Components, *, tenant_id: int, collection: str, model: str | None) -> str | None:
    """A collection's default model (None: routing decides). Blocking."""
    components.adapters.refresh(force=True)
    if model is not None and not components.router.serves(model):
        raise NotFoundError(
            f"model {model!r} is not served here; GET /v1/models lists the base model and adapters",
            param="default_model",
        )
    with components.session_factory() as session:
        row = db_documents.get_collection(session, tenant_id=tenant_id, name=collection)
        if row is None:
            raise NotFoundError(f"collection {collection!r} not found", param="collection")
        db_adapters.set_default_model(session, collection=row, model=model)
        session.commit()
    return model


def register_configured_adapters(components: Components, configured: Sequence[AdapterSettings]) -> None:
    """The settings' adapters into the registry at start-up (added, or updated when their files or texts
    changed). One that fails the checks is logged and left out: the service still starts. Blocking; the
    backend loads each adapter on its first request."""
    for adapter in configured:
        try:
            spec = _inspect(
                components,
                name=adapter.name,
                path=adapter.path.resolve(),
                description=adapter.description,
                examples=adapter.examples,
            )
        except (AdapterRejectedError, ConflictError) as error:
            logger.error("adapter %s from the settings is not served: %s", adapter.name, error.message)
            continue
        with components.session_factory() as session:
            row = db_adapters.get_adapter(session, name=spec.name)
            if row is None:
                db_adapters.add_adapter(session, adapter=_row(spec, "settings"))
            else:
                replacement = _row(spec, "settings")
                for column in ("path", "base_model", "rank", "target_modules", "description", "examples", "source"):
                    setattr(row, column, getattr(replacement, column))
            try:
                session.commit()
            except IntegrityError:  # another process registered it at the same moment
                session.rollback()
    components.adapters.refresh(force=True)



@dataclass(frozen=True)
class TrainingRequest:
    """A LoRA training run; ``None``: the settings' default. The data is an SFT file, or else the approved
    corrections and up-voted answers of ``collection`` (all collections without one) since ``since``."""

    name: str
    data: Path | None = None
    collection: str | None = None
    since: datetime | None = None
    steps: int | None = None
    rank: int | None = None
    learning_rate: float | None = None
    description: str = ""
    examples: tuple[str, ...] = ()


def start_training(components: Components, *, tenant_id: int, request: TrainingRequest) -> JobInfo:
    """Check the request and queue a train job (blocking); the worker trains, then registers the adapter.
    409: the name is taken (registered, being trained, or its directory exists)."""
    from app.services import feedback

    settings = components.settings
    config = settings.training
    name = request.name
    check_adapter_name(name, base_model=components.router.base_model)
    steps = request.steps or config.steps
    rank = request.rank or config.rank
    if steps > config.max_steps:
        raise InvalidInputError(f"steps must be at most {config.max_steps}", param="steps")
    if rank > settings.models.max_lora_rank:
        raise InvalidInputError(f"rank must be at most models.max_lora_rank ({settings.models.max_lora_rank})", param="rank")
    components.adapters.refresh(force=True)
    output_dir = settings.adapters_dir / name
    if components.router.serves(name):
        raise ConflictError(f"a model named {name!r} is already registered", param="name")
    if output_dir.exists():
        raise ConflictError(f"{output_dir} exists already: remove it or pick another name", param="name")
    with components.session_factory() as session:
        for job in db_jobs.unfinished_jobs(session, kind=JobKind.TRAIN):
            if job.payload.get("name") == name:
                raise ConflictError(f"job {job.id} is training an adapter named {name!r} already", param="name")
    if request.data is not None:
        data = request.data
        if not data.is_file():
            raise InvalidInputError(f"no such file: {data}", param="data")
    else:
        data = settings.data_dir / "training" / f"{name}-{uuid.uuid4().hex[:8]}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        lines = feedback.export_feedback(
            components,
            tenant_id=tenant_id,
            export_format="sft",
            collection=request.collection,
            since=request.since,
        )
        written = 0
        with data.open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += 1
        if not written:
            data.unlink()
            raise InvalidInputError(
                "there is no approved correction or up-voted answer to train on"
                + (f" in collection {request.collection!r}" if request.collection else ""),
                param="collection",
            )
    check_sft_file(data)  # bad data is a 400 now, not a failed job later
    with components.session_factory() as session:
        job = db_jobs.enqueue_job(
            session,
            tenant_id=tenant_id,
            kind=JobKind.TRAIN,
            payload={
                "name": name,
                "data": str(data.resolve()),
                "output_dir": str(output_dir.resolve()),
                "steps": steps,
                "rank": rank,
                "learning_rate": request.learning_rate or config.learning_rate,
                "description": request.description.strip(),
                "examples": [e.strip() for e in request.examples if e.strip()],
            },
            stage="train",
        )
        session.commit()
        job_id = job.id
    logger.info("train job %s queued: adapter %s, %d steps, rank %d, data %s", job_id, name, steps, rank, data)
    return get_job(components, tenant_id=tenant_id, job_id=job_id)
