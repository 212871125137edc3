"""HTTP contract for grounded answers and templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.text import QuestionText, TimeZoneName


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=20000)


class AskRequest(BaseModel):
    collection: str = Field(min_length=1, max_length=200)
    question: QuestionText
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
    tz: TimeZoneName = None
    compare: bool = Field(
        False,
        description="With an adapter chosen: the adapter and the base model answer at once and the better-supported "
        "answer is kept; `route.compare` gives both scores. Not with `stream`.",
    )


class CitationPublic(BaseModel):
    kind: Literal["document", "fact", "correction"] = Field(
        "document", description="What is cited: a document span, a fact, or a verified correction."
    )
    chunk_id: int | None = Field(None, description="document: the chunk quoted.")
    document_id: int | None = Field(None, description="document: the document quoted.")
    source: str = Field(description="document: its filename; fact: where the fact came from (clock, tool:NAME).")
    quote: str = Field(
        description="document: exactly the document text between start and end; correction: the span of the "
        "correction's text; fact: its value."
    )
    start: int = Field(description="document: offset in the document's text; correction: in its text.")
    end: int
    name: str | None = Field(None, description="fact: the fact's name.")
    feedback_id: int | None = Field(None, description="correction: the feedback that gave it.")


class SentencePublic(BaseModel):
    text: str
    supported: bool
    citations: list[int] = Field(description="Indexes into `citations`.")


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RoutePublic(BaseModel):
    """Which model answered and why."""

    model: str = Field(description="The model that wrote the answer (the base model or an adapter).")
    reason: Literal["request", "collection", "auto", "fallback"] = Field(
        description="request: the request named it; collection: the collection's default; auto: routing by "
        "domain; fallback: the chosen adapter failed or was unsure and the base model answered."
    )
    score: float | None = Field(
        None,
        description="auto: the best adapter's lead in similarity over the nearest general question (the "
        "adapter answers at models.route_margin or above).",
    )
    cause: (
        Literal[
            "not_loaded",
            "upstream_error",
            "timeout",
            "malformed",
            "low_confidence",
            "unsupported",
            "breaker_open",
            "outscored",
        ]
        | None
    ) = Field(None, description="fallback: why the adapter did not answer.")
    adapter: str | None = Field(None, description="fallback: the adapter that was chosen first.")
    compare: dict[str, float | None] | None = Field(
        None,
        description="compare: each model's support score (the supported share of a grounded answer, 0 for a "
        "refusal, null when it gave no answer).",
    )


class FactPublic(BaseModel):
    """A value no document holds, supplied before generation and cited like a passage."""

    name: str = Field(description="What it is: \"today's date (Asia/Shanghai)\", \"“上周五”的日期\".")
    value: str = Field(description="The value, as the answer should write it.")
    source: str = Field(description="clock, calendar, calculator, or tool:NAME.")


class FactIssuePublic(BaseModel):
    fact: str = Field(description="The fact contradicted.")
    wrote: str = Field(description="What the model wrote.")
    expected: str = Field(description="What the fact says.")
    action: Literal["corrected", "flagged"]


class FactCheckPublic(BaseModel):
    """The answer read against the facts: dates, weekdays, day counts and results that contradict one are
    corrected when there is one thing to correct, flagged otherwise."""

    verdict: Literal["none", "consistent", "corrected", "flagged"]
    issues: list[FactIssuePublic] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="Tools asked that gave no fact, and why (down, slow, malformed)."
    )


class RefusalPublic(BaseModel):
    reason: Literal["no_passages", "no_context_room", "unmentioned_name", "model_refused", "unsupported"]
    detail: str


class AskResponse(BaseModel):
    query_id: str = Field(description="The answer record's id: GET /v1/queries/{query_id}.")
    answer: str
    grounded: bool
    refusal: RefusalPublic | None = Field(None, description="Why the answer is the refusal; null when grounded.")
    citations: list[CitationPublic]
    sentences: list[SentencePublic]
    usage: UsagePublic
    model: str
    route: RoutePublic | None = Field(None, description="Which model answered and why.")
    facts: list[FactPublic] = Field(
        default_factory=list, description="Facts supplied before generation (the clock, dates, sums, tools)."
    )
    fact_check: FactCheckPublic = Field(
        default_factory=lambda: FactCheckPublic(verdict="none"), description="The answer checked against the facts."
    )
    timezone: str = Field("", description="The time zone the question's dates were read in.")
    from_correction: int | None = Field(
        None,
        description="The approved correction (its feedback id) given as the answer itself: the question repeated "
        "the corrected one exactly, and the model was not asked.",
    )
    timings: dict[str, float] = Field(description="Seconds per stage.")
    passages_used: int = Field(description="Evidence given to the model.")
    passages_dropped: int = Field(description="Evidence found but left out to fit the model's window.")
    debug: dict[str, Any] | None = None


class QueryPublic(BaseModel):
    """An answer record, as stored."""

    query_id: str
    collection: str
    endpoint: Literal["ask", "chat", "cli"]
    status: Literal["answered", "refused", "cancelled", "failed"]
    question: str
    standalone_question: str
    model: str
    template: str
    template_version: str
    evidence: list[dict[str, Any]] = Field(description="Everything retrieved, in rank order, and whether it was packed.")
    messages: list[dict[str, str]] = Field(description="The messages exactly as sent to the model.")
    raw_answer: str
    answer: str
    citations: list[dict[str, Any]]
    grounded: bool
    refusal_reason: str | None
    refusal_detail: str
    usage: dict[str, int]
    timings: dict[str, float]
    passages_used: int
    passages_dropped: int
    error: str | None
    route: dict[str, Any] = Field(description="Which model answered and why (see AskResponse.route).")
    facts: list[dict[str, str]] = Field(description="The facts supplied (see AskResponse.facts).")
    fact_check: dict[str, Any] = Field(description="The check against them (see AskResponse.fact_check).")
    timezone: str
    created_at: datetime


class TemplatePublic(BaseModel):
    name: str
    description: str
    variables: list[str]


class TemplateList(BaseModel):
    templates: list[TemplatePublic]
