"""The one place wenda reads the time: an injectable clock, and the request's time zone.

Everything that needs "now" takes a ``Clock``; tests freeze one (``FixedClock``). A request's ``tz`` is an
IANA name (``Asia/Shanghai``, ``Europe/Berlin``); an unknown name is the caller's error, named."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.rag.errors import InvalidInputError


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, time-zone aware."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that says what it is told: for tests and for evaluating against a known day."""

    def __init__(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self.instant = instant

    def now(self) -> datetime:
        return self.instant


def require_zone(name: str) -> str:
    """``name`` if it is an IANA time zone, else ``ValueError`` naming it: for settings and request validators."""
    try:
        zone(name)
    except InvalidInputError as error:
        raise ValueError(error.message) from error
    return name


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; a name that is not one is a 422 on ``tz``."""
    try:
        if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise InvalidInputError(
            f"unknown time zone {name!r}: give an IANA name such as 'Asia/Shanghai' or 'UTC'", param="tz"
        ) from error
