"""Readiness: what ``/readyz`` reports, part by part; and the queue's depth for ``/metrics``."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from app.components import Components
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.health import ping_database
from app.rag.routing import BreakerState
from app.rag.vector_store import IndexCorruptError

# Comparing a collection's ready chunk ids with its index reads every id of both: cheap for thousands, not
# for millions, so one result serves the probes of this many seconds.
INDEX_CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    retry_after: int


class IndexCheck:
    """Does every chunk that search may return have its vector in the index? (Extra vectors are harmless:
    retrieval ignores ids SQL does not call ready.) Reported by name; start-up reconciliation repairs it."""

    def __init__(self, components: Components, *, every_seconds: float = INDEX_CHECK_SECONDS) -> None:
        self._components = components
        self._every = every_seconds
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._problem: str | None = None

    def problem(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self._every:
                self._problem = self._find_problem()
                self._checked_at = now
            return self._problem

    def _find_problem(self) -> str | None:
        problems = []
        components = self._components
        with components.session_factory() as session:
            collections = [
                (c.id, c.name)
                for c in db_documents.all_collections(session)
                if c.embedding_model == components.embedder.name
            ]
        for collection_id, name in collections:
            missing = self._missing(collection_id)
            if missing:
                missing = self._missing(collection_id)  # a document deleted between the two reads: look again
            if isinstance(missing, str):
                problems.append(f"collection {name!r}: {missing}")
            elif missing:
                problems.append(f"collection {name!r} misses {missing} ready chunks")
        return "; ".join(problems) or None

    def _missing(self, collection_id: int) -> int | str:
        # SQL first, the index second: a worker writes vectors before it marks their document ready, so every
        # id SQL calls ready here is already in what the index says next.
        with self._components.session_factory() as session:
            ready = db_documents.ready_chunk_ids(session, collection_id=collection_id)
        try:
            held = self._components.store.ids(collection_id)
        except IndexCorruptError as error:
            return f"index unreadable ({error})"
        return len(ready - held)


async def readiness(components: Components, index_check: IndexCheck) -> Readiness:
    """The database (a trivial question on a pooled connection within its own short timeout; known to be down:
    without asking), the index against SQL, and the chat model's backend. Each failing part is named."""
    settings = components.settings.database
    health = components.database_health
    if health is not None:
        problem = await asyncio.to_thread(health.check, components.engine)
    else:
        problem = await asyncio.to_thread(ping_database, components.engine, settings.request_timeout_seconds)
    checks = {"database": "ok" if problem is None else f"down: {problem}"}
    ready = problem is None
    if ready:  # the index check reads SQL: nothing to learn while the database is down
        index_problem = await asyncio.to_thread(index_check.problem)
        checks["index"] = "ok" if index_problem is None else f"inconsistent: {index_problem}"
        ready = index_problem is None
    llm_problem = await components.llm.check()
    checks["chat_model"] = "ok" if llm_problem is None else f"down: {llm_problem}"
    ready = ready and llm_problem is None
    # Adapters whose circuit breaker is open are reported, but do not make the service unready: the base
    # model answers their questions meanwhile.
    adapters = components.adapters.adapters()
    if adapters:
        open_breakers = [a.name for a in adapters if components.router.breaker_state(a.name) != BreakerState.CLOSED]
        checks["adapters"] = (
            f"{len(adapters)} registered; circuit open (the base model answers): {', '.join(open_breakers)}"
            if open_breakers
            else f"{len(adapters)} registered, all closed"
        )
    return Readiness(ready=ready, checks=checks, retry_after=settings.retry_after_seconds)


def queue_depth(components: Components) -> list[tuple[str, str, int]]:
    """(kind, status, count) of the jobs queued or running, every tenant's."""
    with components.session_factory() as session:
        return db_jobs.unfinished_counts(session)
