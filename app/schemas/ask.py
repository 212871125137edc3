"""HTTP contract for grounded answers and templates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=20000)


class AskRequest(BaseModel):
    collection: str = Field(min_length=1, max_length=200)
    question: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(
        None, description="Model or LoRA adapter name; the server's default when absent."
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="Passages retrieved before packing; defaults to the server's retrieval.answer_top_k.",
    )
    stream: bool = Field(False, description="Server-Sent Events: `delta` events, then one `done` event.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    template: str = Field("qa", min_length=1, max_length=100)
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="Earlier turns, oldest first."
    )
    debug: bool = Field(False, description="Return the rendered messages and the raw model answer.")


class CitationPublic(BaseModel):
    chunk_id: int
    document_id: int
    source: str
    quote: str = Field(description="Exactly the document text between start and end.")
    start: int
    end: int


class SentencePublic(BaseModel):
    text: str
    supported: bool
    citations: list[int] = Field(description="Indexes into `citations`.")


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AskResponse(BaseModel):
    query_id: str
    answer: str
    grounded: bool
    citations: list[CitationPublic]
    sentences: list[SentencePublic]
    usage: UsagePublic
    model: str
    timings: dict[str, float]
    debug: dict[str, Any] | None = None


class TemplatePublic(BaseModel):
    name: str
    description: str
    variables: list[str]


class TemplateList(BaseModel):
    templates: list[TemplatePublic]
