"""The job worker: claims jobs from the SQL queue and runs each with the handler for its kind, in-process
threads or its own process.

A handler is a callable taking the job's payload and a progress callback. It returns a ``JobOutcome`` on
success; ``JobFailedError`` fails the job for good; any other exception is retried with exponential backoff
until ``max_attempts``. A job tied to a document (an ingest job) carries the document's status along:
processing while it runs, queued while it waits for a retry, ready or failed at the end.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.config import WorkerSettings
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.statuses import DocumentStatus, JobKind
from app.logs import job_context
from app.rag.errors import DocumentParseError, DocumentTooLargeError
from ingest.pipeline import DocumentGoneError, IngestPipeline, ProgressCallback

logger = logging.getLogger(__name__)


class LeaseLostError(Exception):
    """Another worker took the job over (this one stalled past its lease)."""


class JobFailedError(Exception):
    """The job cannot succeed and retrying would fail the same way; the message is what the user sees."""


class JobSubjectGoneError(Exception):
    """What the job works on was deleted while it ran, and the job with it: there is nothing to record."""


@dataclass(frozen=True)
class JobOutcome:
    """A handler's success."""

    timings: dict[str, float] = field(default_factory=dict)
    # Writes the job's result in the transaction that marks it done (only once the job is known to still be
    # this worker's); returns False to drop the result, when what it belongs to is gone.
    record: Callable[[Session], bool] | None = None
    # What the job produced, stored with it for GET /v1/jobs/{id} (train: the adapter, steps, final loss).
    result: dict[str, Any] = field(default_factory=dict)


JobHandler = Callable[[Mapping[str, Any], ProgressCallback], JobOutcome]


def ingest_handler(pipeline: IngestPipeline) -> JobHandler:
    """Runs the pipeline on the payload's document and, once the job is done, marks the document ready."""

    def run(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        document_id = payload.get("document_id")
        if not isinstance(document_id, int):
            raise JobFailedError("this ingest job's payload names no document_id")
        try:
            ingested = pipeline.run(document_id, progress)
        except (DocumentParseError, DocumentTooLargeError) as error:
            raise JobFailedError(error.message) from error
        except DocumentGoneError as error:
            raise JobSubjectGoneError(str(error)) from error

        def mark_ready(session: Session) -> bool:
            document = db_documents.get_document_for_job(session, document_id=document_id)
            if document is None:
                return False
            db_documents.mark_document_ready(session, document=document, chunk_count=ingested.chunk_count)
            return True

        return JobOutcome(timings=ingested.timings, record=mark_ready)

    return run


@dataclass(frozen=True)
class _ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    document_id: int | None
    attempts: int


@dataclass
class _JobState:
    """What the heartbeat thread reports for the job in flight."""

    stage: str = "parse"
    progress: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    lease_lost: bool = False


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: WorkerSettings,
        pipeline: IngestPipeline | None = None,
        handlers: Mapping[str, JobHandler] | None = None,
        worker_id: str | None = None,
    ) -> None:
        """``pipeline`` gives the ingest handler; ``handlers`` add kinds (or replace ingest's)."""
        self._session_factory = session_factory
        self._settings = settings
        self._handlers: dict[str, JobHandler] = {}
        if pipeline is not None:
            self._handlers[JobKind.INGEST] = ingest_handler(pipeline)
        self._handlers.update(handlers or {})
        self.worker_id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_once(self, *, max_document_bytes: int | None = None) -> bool:
        """Claim and run one job (with ``max_document_bytes``, only one for a document at most that large,
        or for none); False when the queue had nothing to claim."""
        with self._session_factory() as session:
            claimed = db_jobs.claim_next_job(
                session,
                worker_id=self.worker_id,
                lease_seconds=self._settings.lease_seconds,
                max_document_bytes=max_document_bytes,
            )
            if claimed is None:
                return False
            job = _ClaimedJob(
                id=claimed.id,
                kind=claimed.kind,
                payload=dict(claimed.payload or {}),
                document_id=claimed.document_id,
                attempts=claimed.attempts,
            )
            if job.document_id is not None:
                db_documents.set_document_status(
                    session, document_id=job.document_id, status=DocumentStatus.PROCESSING
                )
            session.commit()
        logger.info(
            "job %s (%s, document %s) claimed by %s, attempt %d",
            job.id,
            job.kind,
            job.document_id,
            self.worker_id,
            job.attempts,
        )
        if job.attempts > self._settings.max_attempts:
            self._finish_failed(
                job,
                f"gave up after {job.attempts - 1} attempts that did not finish "
                "(the worker stopped while running this job each time)",
                retry=False,
            )
            return True
        handler = self._handlers.get(job.kind)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            logger.error("job %s: no handler for kind %r on worker %s", job.id, job.kind, self.worker_id)
            self._finish_failed(
                job, f"no handler for job kind {job.kind!r} (this worker runs: {known})", retry=False
            )
            return True
        self._run_claimed(job, handler)
        return True

    def _run_claimed(self, job: _ClaimedJob, handler: JobHandler) -> None:
        # Every line logged about the job from here on, the handler's included, carries job-<id>.
        with job_context(job.id):
            self._run_in_context(job, handler)

    def _run_in_context(self, job: _ClaimedJob, handler: JobHandler) -> None:
        state = _JobState()
        beat_stop = threading.Event()
        # In this thread's context, so that the heartbeat's log lines carry the job's id too.
        beat = threading.Thread(
            target=contextvars.copy_context().run, args=(self._heartbeat, job.id, state, beat_stop), daemon=True
        )
        beat.start()

        def progress(stage: str, fraction: float) -> None:
            if state.lease_lost:
                raise LeaseLostError
            state.stage, state.progress = stage, round(fraction, 4)

        try:
            outcome = handler(job.payload, progress)
        except JobFailedError as error:
            metrics.observe_job_failed(job.kind, state.stage, "rejected", retried=False)
            self._finish_failed(job, str(error), retry=False)
        except JobSubjectGoneError as error:
            logger.info("job %s: %s", job.id, error)
        except LeaseLostError:
            logger.warning("job %s: lease lost to another worker; abandoning", job.id)
        except Exception as error:
            logger.exception("job %s failed in stage %s", job.id, state.stage)
            retried = job.attempts < self._settings.max_attempts
            metrics.observe_job_failed(job.kind, state.stage, type(error).__name__, retried=retried)
            if retried:
                delay = db_jobs.retry_delay_seconds(
                    failed_attempts=job.attempts,
                    base_seconds=self._settings.retry_base_seconds,
                    cap_seconds=self._settings.retry_cap_seconds,
                    jitter=self._settings.retry_jitter,
                )
                message = (
                    f"internal error in stage '{state.stage}' ({type(error).__name__}); "
                    f"it will be retried in {delay:.1f} s"
                )
                self._finish_failed(job, message, retry=True, retry_delay_seconds=delay)
            else:
                message = (
                    f"internal error in stage '{state.stage}' ({type(error).__name__}); "
                    f"gave up after {job.attempts} attempts; see the server log"
                )
                self._finish_failed(job, message, retry=False)
        else:
            state.timings.update(outcome.timings)
            self._finish_done(job, outcome, state)
            metrics.observe_job_done(job.kind, outcome.timings)
        finally:
            beat_stop.set()
            beat.join()

    def _heartbeat(self, job_id: int, state: _JobState, stop: threading.Event) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            try:
                with self._session_factory() as session:
                    owned = db_jobs.report_progress(
                        session,
                        job_id=job_id,
                        worker_id=self.worker_id,
                        stage=state.stage,
                        progress=state.progress,
                        timings=state.timings,
                    )
            except Exception:
                # A database hiccup must not silence the heartbeat for the rest of the job: try again soon.
                logger.exception("job %s: heartbeat failed; retrying", job_id)
                owned = True
            if not owned:
                state.lease_lost = True
                return
            if stop.wait(min(interval, 1.0)):
                return

    def _finish_done(self, job: _ClaimedJob, outcome: JobOutcome, state: _JobState) -> None:
        rounded = {k: round(v, 4) for k, v in state.timings.items()}
        with self._session_factory() as session:
            # The done mark and the handler's result in one transaction, and only if the job is still ours.
            if not db_jobs.finish_job(
                session,
                job_id=job.id,
                worker_id=self.worker_id,
                timings=rounded,
                stage=state.stage,
                result=outcome.result,
            ):
                session.rollback()
                logger.warning("job %s: finished, but it is no longer this worker's; result dropped", job.id)
                return
            if outcome.record is not None and not outcome.record(session):
                session.rollback()
                logger.info("job %s: finished, but what it worked on is gone; result dropped", job.id)
                return
            session.commit()
        logger.info("job %s done (%s, document %s)", job.id, job.kind, job.document_id)

    def _finish_failed(
        self, job: _ClaimedJob, message: str, *, retry: bool, retry_delay_seconds: float = 0.0
    ) -> None:
        with self._session_factory() as session:
            if not db_jobs.fail_job(
                session,
                job_id=job.id,
                worker_id=self.worker_id,
                error=message,
                retry=retry,
                retry_delay_seconds=retry_delay_seconds,
            ):
                session.rollback()
                logger.warning("job %s: failed, but it is no longer this worker's; outcome dropped", job.id)
                return
            if job.document_id is not None:
                db_documents.set_document_status(
                    session,
                    document_id=job.document_id,
                    status=DocumentStatus.QUEUED if retry else DocumentStatus.FAILED,
                )
            session.commit()
        if retry:
            logger.info(
                "job %s: attempt %d failed; next one in %.1f s", job.id, job.attempts, retry_delay_seconds
            )

    def run_forever(self, *, max_document_bytes: int | None = None) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once(max_document_bytes=max_document_bytes)
            except Exception:
                # A database hiccup must not end the worker; wait and look again.
                logger.exception("worker %s: error while claiming a job", self.worker_id)
                worked = False
            if not worked:
                self._stop.wait(self._settings.poll_seconds)

    def start(self) -> None:
        """Start ``threads`` threads that take any job and ``small_job_threads`` that take only small ones: a
        large document then never holds up a small upload, however many large ones are queued."""
        self._stop.clear()
        lanes: list[tuple[str, int | None]] = [("wenda-worker", None)] * self._settings.threads
        lanes += [("wenda-worker-small", self._settings.small_job_bytes)] * self._settings.small_job_threads
        for n, (name, max_document_bytes) in enumerate(lanes):
            thread = threading.Thread(
                target=self.run_forever,
                kwargs={"max_document_bytes": max_document_bytes},
                name=f"{name}-{n}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def wait(self) -> None:
        """Block until every thread has ended after ``request_stop``, in short joins so that the main thread
        still takes signals."""
        while any(thread.is_alive() for thread in self._threads):
            for thread in self._threads:
                thread.join(0.5)

    def request_stop(self) -> None:
        """Take no further jobs; the ones running finish (``wait`` returns when they have)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
