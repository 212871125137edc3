"""HTTP contract of the model registry: OpenAI's model list (with vLLM's ``parent``) plus wenda's fields."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the adapter was registered (the base model: 0).")
    owned_by: str = "wenda"
    root: str = Field(description="The base model's name, or the adapter's directory.")
    parent: str | None = Field(description="Adapters: the base model they run on; null for the base model.")
    kind: Literal["base", "adapter"] = Field(description="wenda: the base model or a LoRA adapter.")
    status: Literal["ready", "unavailable", "probing"] = Field(
        description="wenda: unavailable while the adapter's circuit breaker is open (it failed repeatedly: "
        "requests go to the base model); probing while one request tries it again."
    )
    breaker: Literal["closed", "open", "half-open"] = Field(description="wenda: the circuit breaker's state.")
    domain: str | None = Field(None, description="wenda: what the adapter is for; auto routing compares with it.")
    examples: list[str] = Field(default_factory=list, description="wenda: example questions of its domain.")
    rank: int | None = Field(None, description="wenda: the adapter's LoRA rank.")
    target_modules: list[str] = Field(default_factory=list, description="wenda: the layers it adapts.")
    base_model: str | None = Field(None, description="wenda: the base model its adapter_config.json names.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class AdapterRegistration(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="The name requests use as `model`.")
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path of the adapter directory (adapter_config.json, adapter_model.safetensors), "
        "readable by wenda and, with vLLM, by the vLLM server.",
    )
    description: str = Field("", max_length=2000, description="Its domain: what auto routing compares with.")
    examples: list[str] = Field(
        default_factory=list, max_length=100, description="Example questions of its domain, for routing."
    )


class CollectionUpdate(BaseModel):
    default_model: str | None = Field(
        max_length=300,
        description="The model (base or adapter) that answers this collection's questions when a request "
        "names none; null lets routing decide.",
    )


class AdapterTraining(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="The new adapter's name (what requests use as `model`).")
    data: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="An SFT JSONL file on the server (`wenda feedback export --format sft`). Without it, the "
        "approved corrections and up-voted answers of `collection` (of every collection without one) are used.",
    )
    collection: str | None = Field(None, min_length=1, max_length=200)
    since: datetime | None = Field(None, description="Without `data`: only feedback given since then.")
    steps: int | None = Field(None, ge=1, description="Optimizer steps; default training.steps.")
    rank: int | None = Field(None, ge=1, le=64, description="LoRA rank; default training.rank.")
    learning_rate: float | None = Field(None, gt=0, le=1.0, description="Default training.learning_rate.")
    description: str = Field("", max_length=2000, description="Its domain, for auto routing.")
    examples: list[str] = Field(default_factory=list, max_length=100, description="Example questions, for routing.")
