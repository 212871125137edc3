"""Field types shared by the request schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from app.rag.facts.clock import require_zone


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# A question or a query: whitespace alone asks nothing, and is refused before any work.
QuestionText = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_not_blank)]


def _known_zone(value: str | None) -> str | None:
    return require_zone(value) if value is not None else None


# An IANA time zone name; an unknown one is a 422 that names it. None: the server's facts.default_timezone.
TimeZoneName = Annotated[
    str | None,
    Field(
        None,
        max_length=64,
        description="The asker's IANA time zone (Asia/Shanghai, Europe/Berlin): today's date and the question's "
        "dates are read there. Default: the server's facts.default_timezone.",
    ),
    AfterValidator(_known_zone),
]
