"""HTTP contract of feedback: ratings and corrections of answers, their review, and training exports."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

FeedbackStatusName = Literal["rating", "pending", "approved", "withdrawn"]


class FeedbackRequest(BaseModel):
    query_id: str = Field(
        min_length=1,
        max_length=80,
        description="The answer's query_id (or the chat completion's id, chatcmpl-<query_id>).",
    )
    rating: Literal["up", "down"]
    correction: str | None = Field(
        None,
        min_length=1,
        max_length=8000,
        description="The right answer. Once approved it answers the same and similar questions, cited as a "
        "correction, and becomes training data.",
    )
    comment: str = Field("", max_length=4000, description="Anything else; stored, not used.")


class FeedbackPublic(BaseModel):
    id: int
    query_id: str
    collection: str | None = Field(description="The collection the answer came from; null once it is deleted.")
    rating: Literal["up", "down"]
    correction: str | None
    comment: str
    status: FeedbackStatusName = Field(
        description="rating: a rating alone; pending: a correction awaiting approval; approved: in use; "
        "withdrawn: no longer used."
    )
    question: str = Field(description="The question the answer was to (standalone, after any rewrite).")
    created_at: datetime
    approved_at: datetime | None
    withdrawn_at: datetime | None


class FeedbackList(BaseModel):
    data: list[FeedbackPublic]
