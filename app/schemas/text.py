"""Field types shared by the request schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# A question or a query: whitespace alone asks nothing, and is refused before any work.
QuestionText = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_not_blank)]
