"""HTTP contract for retrieval."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.text import QuestionText


class RetrieveRequest(BaseModel):
    collection: str = Field(min_length=1, max_length=200)
    query: QuestionText
    top_k: int | None = Field(None, ge=1, description="Defaults to the server's retrieval.default_top_k.")
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(None, description="Defaults to the server's.")
    diversify: bool | None = Field(
        None,
        description="Best passage of each document first, then deeper ones (default: the server's setting); "
        "false gives plain passage order.",
    )


class RetrievedChunkPublic(BaseModel):
    chunk_id: int
    document_id: int
    source: str = Field(description="The uploaded filename.")
    aliases: list[str] = Field(
        default_factory=list, description="Other filenames the same bytes were uploaded under (duplicates)."
    )
    text: str
    score: float
    start: int = Field(description="Character offset of the chunk in the parsed document.")
    end: int
    section: str
    prior: float = Field(
        0.0, description="Net votes from ratings of answers that cited this passage, weighed by age."
    )
    rank_shift: int = Field(
        0, description="Places those votes moved it after fusion (positive: up; at most feedback.max_rank_shift)."
    )


class RetrieveResponse(BaseModel):
    chunks: list[RetrievedChunkPublic]
