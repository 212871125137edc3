"""The model registry: the base model and its LoRA adapters, in OpenAI's /v1/models shape."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path as FilePath

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from app.deps import ComponentsDep, TenantDep
from app.schemas.documents import JobPublic
from app.schemas.models import AdapterRegistration, AdapterTraining, ModelList, ModelPublic
from app.services import models
from app.services.models import ModelInfo, TrainingRequest

router = APIRouter(tags=["models"])

AdapterName = Path(min_length=1, max_length=64, description="An adapter's name.")


def model_public(info: ModelInfo) -> ModelPublic:
    return ModelPublic(
        id=info.name,
        created=int(info.created_at.timestamp()) if info.created_at else 0,
        root=info.path or info.name,
        parent=info.parent,
        kind=info.kind,
        status=info.status,
        breaker=info.breaker,
        domain=info.description or None,
        examples=list(info.examples),
        rank=info.rank,
        target_modules=list(info.target_modules),
        base_model=info.base_model,
    )


@router.get("/v1/models", response_model=ModelList)
def list_models(components: ComponentsDep) -> ModelList:
    """The base model and every registered LoRA adapter (``parent`` = the base model), with their state."""
    return ModelList(data=[model_public(info) for info in models.list_models(components)])


@router.post("/v1/models/adapters", response_model=ModelPublic, status_code=201)
async def register_adapter(body: AdapterRegistration, components: ComponentsDep) -> ModelPublic:
    """Register a LoRA adapter directory. 422 names what does not fit the base model; 409: the name is taken."""
    info = await models.register_adapter(
        components, name=body.name, path=body.path, description=body.description, examples=body.examples
    )
    return model_public(info)


@router.delete("/v1/models/adapters/{name}", status_code=204)
async def remove_adapter(components: ComponentsDep, name: str = AdapterName) -> Response:
    """Remove an adapter; collections that defaulted to it are routed again."""
    await models.remove_adapter(components, name=name)
    return Response(status_code=204)


@router.post("/v1/models/adapters/train", response_model=JobPublic, status_code=202)
async def train_adapter(body: AdapterTraining, components: ComponentsDep, tenant_id: TenantDep) -> JobPublic:
    """Fine-tune a LoRA adapter on the base model (TRL and PEFT) as a job: GET /v1/jobs/{job_id} shows its
    progress; when it is done the adapter is registered and served under ``name``. 409: the name is taken."""
    request = TrainingRequest(
        name=body.name,
        data=FilePath(body.data) if body.data else None,
        collection=body.collection,
        since=body.since,
        steps=body.steps,
        rank=body.rank,
        learning_rate=body.learning_rate,
        description=body.description,
        examples=tuple(body.examples),
    )
    job = await run_in_threadpool(partial(models.start_training, components, tenant_id=tenant_id, request=request))
    return JobPublic.model_validate(asdict(job))
