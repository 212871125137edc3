"""The model registry as one API process sees it: the adapters last read from SQL, the store of record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.db import adapters as db_adapters
from app.db.models import ModelAdapter
from app.rag.adapters import AdapterSpec


def _spec(row: ModelAdapter) -> AdapterSpec:
    return AdapterSpec(
        name=row.name,
        path=row.path,
        base_model=row.base_model,
        rank=row.rank,
        target_modules=tuple(row.target_modules),
        description=row.description,
        examples=tuple(row.examples),
    )


class AdapterRegistry:
    """The registered adapters as this process last read them from SQL. ``adapters`` never touches the
    database (the router calls it on the event loop); ``refresh`` reads again when the list is older than
    ``refresh_seconds`` and is called off the loop before each answer, so a registration made by another API
    process is served here within that time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._adapters: tuple[AdapterSpec, ...] = ()
        self._created: dict[str, datetime] = {}
        self._read_at: float | None = None

    def adapters(self) -> tuple[AdapterSpec, ...]:
        return self._adapters

    def created_at(self, name: str) -> datetime | None:
        return self._created.get(name)

    def refresh(self, *, force: bool = False) -> None:
        """Blocking (SQL)."""
        with self._lock:
            now = self._clock()
            if not force and self._read_at is not None and now - self._read_at < self._refresh_seconds:
                return
            with self._session_factory() as session:
                rows = db_adapters.list_adapters(session)
                self._adapters = tuple(_spec(row) for row in rows)
                self._created = {row.name: row.created_at for row in rows}
            self._read_at = now
