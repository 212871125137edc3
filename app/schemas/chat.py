"""HTTP contract of the OpenAI-compatible RAG endpoint: OpenAI's chat shapes plus wenda's extra fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.ask import (
    CitationPublic,
    FactCheckPublic,
    FactPublic,
    RefusalPublic,
    RoutePublic,
    UsagePublic,
)
from app.schemas.text import TimeZoneName


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None


class ChatCompletionRequest(BaseModel):
    # Unknown OpenAI parameters (n, stop, seed, ...) are accepted and ignored rather than refused.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="Model or LoRA adapter name.")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=100)
    collection: str = Field(min_length=1, max_length=200, description="wenda: the collection to answer from.")
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    template: str = Field("qa", min_length=1, max_length=100, description="wenda: the prompt template.")
    top_k: int | None = Field(
        None, ge=1, description="wenda: passages retrieved (default retrieval.answer_top_k)."
    )
    tz: TimeZoneName = None
    compare: bool = Field(False, description="wenda: adapter and base model answer at once (see /v1/ask).")


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    citations: list[CitationPublic] = Field(description="wenda: checked citations; quotes are exact spans.")
    grounded: bool = Field(description="wenda: false when the answer is the refusal.")


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str = "stop"


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsagePublic
    query_id: str = Field(description="wenda: the id to rate or correct this answer by (GET /v1/queries/{id}).")
    refusal: RefusalPublic | None = Field(None, description="wenda: why the answer is the refusal.")
    route: RoutePublic | None = Field(None, description="wenda: which model answered and why.")
    facts: list[FactPublic] = Field(default_factory=list, description="wenda: facts supplied before generation.")
    fact_check: FactCheckPublic | None = Field(None, description="wenda: the answer checked against the facts.")
    from_correction: int | None = Field(
        None, description="wenda: the approved correction given as the answer itself (see AskResponse)."
    )


def chunk_payload(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` as OpenAI streams it."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **(extra or {}),
    }
