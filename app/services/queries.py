"""Answer records: every answer, from any endpoint, streamed or not, stored in SQL under its ``query_id``.

Records are written off the request's path by one writer thread that batches them; ``close`` drains the
queue on a normal shutdown, so none is lost. Until its row is written a record is kept in memory and served
from there, so a client that reads its ``query_id`` back at once never gets a 404 from this process.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.config import AnswerRecordSettings
from app.db import answers as db_answers
from app.db.models import utcnow
from app.rag.answering import Answer
from app.rag.errors import NotFoundError
from app.rag.evidence import evidence_summary

logger = logging.getLogger(__name__)

_BATCH = 100
_PRUNE_EVERY = timedelta(hours=1)
_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class AnswerContext:
    """Who asked where: what the answer flow itself does not know."""

    query_id: str
    tenant_id: int
    collection_id: int
    collection_name: str
    endpoint: str  # ask | chat | cli


@dataclass(frozen=True)
class QueryRecord:
    query_id: str
    collection_id: int | None  # None once the collection is deleted
    collection: str
    endpoint: str
    status: str
    question: str
    standalone_question: str
    model: str
    template: str
    template_version: str
    evidence: list[dict[str, Any]]
    messages: list[dict[str, str]]
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
    route: dict[str, Any]
    facts: list[dict[str, str]]
    fact_check: dict[str, Any]
    timezone: str
    created_at: datetime


def record_row(context: AnswerContext, answer: Answer, *, created_at: datetime) -> dict[str, Any]:
    """The answers table's columns for one answer."""
    packed = {id(p.evidence) for p in answer.passages}
    return {
        "query_id": context.query_id,
        "tenant_id": context.tenant_id,
        "collection_id": context.collection_id,
        "collection_name": context.collection_name,
        "endpoint": context.endpoint,
        "status": answer.status.value,
        "question": answer.question,
        "standalone_question": answer.standalone_question,
        "model": answer.model,
        "template": answer.template,
        "template_version": answer.template_version,
        "evidence": [
            evidence_summary(e, rank=rank, packed=id(e) in packed)
            for rank, e in enumerate(answer.evidence, start=1)
        ],
        "messages": [{"role": m.role, "content": m.content} for m in answer.messages],
        "raw_answer": answer.raw_answer,
        "answer": answer.text,
        "citations": [
            {k: v for k, v in asdict(c).items() if v not in (None, "")}
            for c in (answer.checked.citations if answer.checked else ())
        ],
        "grounded": answer.grounded,
        "refusal_reason": answer.refusal.reason.value if answer.refusal else None,
        "refusal_detail": answer.refusal.detail if answer.refusal else "",
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
        },
        "timings": answer.timings,
        "passages_used": answer.passages_used,
        "passages_dropped": answer.passages_dropped,
        "error": answer.error,
        "route": answer.route.as_dict() if answer.route else {},
        "facts": [{"name": f.name, "value": f.value, "source": f.source} for f in answer.facts],
        "fact_check": {**answer.fact_check.as_dict(), "notes": list(answer.fact_notes)},
        "timezone": answer.timezone,
        "created_at": created_at,
    }


class AnswerLog:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: AnswerRecordSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._clock = clock
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=settings.queue_size)
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_prune: datetime | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wenda-answer-log", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("answer log: %d records not written at shutdown", self._queue.qsize())
        self._thread = None

    def flush(self) -> None:
        """Wait until every record submitted so far is written (tests and the CLI)."""
        if self._thread is not None:
            self._queue.join()

    def record(self, context: AnswerContext, answer: Answer) -> None:
        """Keep an answer; never raises: a record that cannot be written is logged, the answer still goes out."""
        # Every answer passes here, whatever the endpoint and however it ended: the one place to count them.
        metrics.observe_answer(context.endpoint, answer)
        row = record_row(context, answer, created_at=self._clock())
        if self._thread is None:
            self._write_now(row)  # no writer running (the command line): write now
            return
        with self._pending_lock:
            self._pending[context.query_id] = row
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            # The database is far behind: slow this request down rather than lose its record.
            self._write_now(row)
            self._forget([row])

    def _write_now(self, row: dict[str, Any]) -> None:
        try:
            self._write([row])
        except Exception:
            logger.exception("answer log: the record of query %s could not be written", row["query_id"])

    def get(self, *, tenant_id: int, query_id: str) -> QueryRecord:
        with self._pending_lock:
            row = self._pending.get(query_id)
        if row is not None and row["tenant_id"] == tenant_id:
            return _query_record(row)
        with self._session_factory() as session:
            stored = db_answers.get_answer(session, tenant_id=tenant_id, query_id=query_id)
            if stored is None:
                raise NotFoundError(f"query {query_id!r} not found", param="query_id")
            return _query_record({c: getattr(stored, c) for c in _COLUMNS})

    def get_many(self, *, tenant_id: int, query_ids: Sequence[str]) -> dict[str, QueryRecord]:
        """The records of these queries that exist (blocking)."""
        found: dict[str, QueryRecord] = {}
        with self._pending_lock:
            for query_id in query_ids:
                row = self._pending.get(query_id)
                if row is not None and row["tenant_id"] == tenant_id:
                    found[query_id] = _query_record(row)
        missing = [q for q in query_ids if q not in found]
        if missing:
            with self._session_factory() as session:
                stored = db_answers.get_answers(session, tenant_id=tenant_id, query_ids=missing)
                for query_id, answer in stored.items():
                    found[query_id] = _query_record({c: getattr(answer, c) for c in _COLUMNS})
        return found

    def prune(self) -> int:
        """Delete records past the retention period; returns how many went."""
        if not self._settings.retention_days:
            return 0
        before = self._clock() - timedelta(days=self._settings.retention_days)
        with self._session_factory() as session:
            removed = db_answers.delete_answers_before(session, before=before)
            session.commit()
        if removed:
            logger.info("answer log: pruned %d records older than %s", removed, before.isoformat())
        return removed

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[dict[str, Any]] = []
            stopping = first is None
            if first is not None:
                batch.append(first)
            while len(batch) < _BATCH and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            self._write_until_done(batch, give_up=stopping)
            self._forget(batch)
            for _ in range(len(batch) + (1 if stopping else 0)):
                self._queue.task_done()
            self._prune_now_and_then()

    def _write_until_done(self, batch: list[dict[str, Any]], *, give_up: bool) -> None:
        attempts = 0
        while batch:
            try:
                self._write(batch)
                return
            except Exception:
                attempts += 1
                logger.exception("answer log: writing %d records failed (attempt %d)", len(batch), attempts)
                if give_up and attempts >= 3:
                    logger.error("answer log: %d records lost at shutdown", len(batch))
                    return
                threading.Event().wait(min(_RETRY_SECONDS * attempts, 30.0))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._session_factory() as session:
            db_answers.insert_answers(session, rows=rows)
            session.commit()

    def _forget(self, rows: list[dict[str, Any]]) -> None:
        with self._pending_lock:
            for row in rows:
                self._pending.pop(row["query_id"], None)

    def _prune_now_and_then(self) -> None:
        now = self._clock()
        if self._last_prune is not None and now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            self.prune()
        except Exception:
            logger.exception("answer log: pruning failed")


# QueryRecord's fields are the table's columns, but for the collection's name.
_COLUMN_OF = {"collection": "collection_name"}
_COLUMNS = tuple(_COLUMN_OF.get(f.name, f.name) for f in fields(QueryRecord))


def _query_record(row: dict[str, Any]) -> QueryRecord:
    values = {f.name: row[_COLUMN_OF.get(f.name, f.name)] for f in fields(QueryRecord)}
    created: datetime = values["created_at"]
    # SQLite hands back naive datetimes; every time stored is UTC.
    values["created_at"] = created if created.tzinfo else created.replace(tzinfo=UTC)
    return QueryRecord(**values)
