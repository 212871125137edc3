"""The ingestion worker: claims jobs from the SQL queue and runs them, in-process threads or its own process."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from app.config import WorkerSettings
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.rag.errors import DocumentParseError
from ingest.pipeline import DocumentGoneError, IngestPipeline

logger = logging.getLogger(__name__)


class LeaseLostError(Exception):
    """Another worker took the job over (this one stalled past its lease)."""


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
        pipeline: IngestPipeline,
        settings: WorkerSettings,
        worker_id: str | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._pipeline = pipeline
        self._settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue had nothing to claim."""
        with self._session_factory() as session:
            job = db_jobs.claim_next_job(
                session, worker_id=self.worker_id, lease_seconds=self._settings.lease_seconds
            )
            if job is None:
                return False
            job_id, document_id, attempts = job.id, job.document_id, job.attempts
            db_documents.set_document_status(session, document_id=document_id, status="processing")
            session.commit()
        logger.info(
            "job %s (document %s) claimed by %s, attempt %d", job_id, document_id, self.worker_id, attempts
        )
        if attempts > self._settings.max_attempts:
            self._finish_failed(
                job_id,
                document_id,
                f"gave up after {attempts - 1} attempts that did not finish "
                "(the worker stopped while processing this file each time)",
                retry=False,
            )
            return True
        self._run_claimed(job_id, document_id, attempts)
        return True

    def _run_claimed(self, job_id: int, document_id: int, attempts: int) -> None:
        state = _JobState()
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, state, beat_stop), daemon=True)
        beat.start()

        def progress(stage: str, fraction: float) -> None:
            if state.lease_lost:
                raise LeaseLostError
            state.stage, state.progress = stage, round(fraction, 4)

        try:
            outcome = self._pipeline.run(document_id, progress)
        except DocumentParseError as error:
            self._finish_failed(job_id, document_id, error.message, retry=False)
        except DocumentGoneError:
            logger.info("job %s: document %s was deleted meanwhile", job_id, document_id)
        except LeaseLostError:
            logger.warning("job %s: lease lost to another worker; abandoning", job_id)
        except Exception as error:
            logger.exception("job %s failed in stage %s", job_id, state.stage)
            retry = attempts < self._settings.max_attempts
            message = f"internal error in stage '{state.stage}' ({type(error).__name__}); " + (
                "it will be retried" if retry else f"gave up after {attempts} attempts; see the server log"
            )
            self._finish_failed(job_id, document_id, message, retry=retry)
        else:
            state.timings.update(outcome.timings)
            self._finish_done(job_id, document_id, outcome.chunk_count, state.timings)
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

    def _finish_done(
        self, job_id: int, document_id: int, chunk_count: int, timings: dict[str, float]
    ) -> None:
        with self._session_factory() as session:
            document = db_documents.get_document_for_job(session, document_id=document_id)
            rounded = {k: round(v, 4) for k, v in timings.items()}
            # Both in one transaction, and only if the job is still ours.
            if document is None or not db_jobs.finish_job(
                session, job_id=job_id, worker_id=self.worker_id, timings=rounded
            ):
                session.rollback()
                logger.warning("job %s: finished, but it is no longer this worker's; result dropped", job_id)
                return
            db_documents.mark_document_ready(session, document=document, chunk_count=chunk_count)
            session.commit()
        logger.info("job %s done: document %s, %d chunks", job_id, document_id, chunk_count)

    def _finish_failed(self, job_id: int, document_id: int, message: str, *, retry: bool) -> None:
        with self._session_factory() as session:
            if not db_jobs.fail_job(
                session, job_id=job_id, worker_id=self.worker_id, error=message, retry=retry
            ):
                session.rollback()
                logger.warning("job %s: failed, but it is no longer this worker's; outcome dropped", job_id)
                return
            db_documents.set_document_status(
                session, document_id=document_id, status="queued" if retry else "failed"
            )
            session.commit()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                # A database hiccup must not end the worker; wait and look again.
                logger.exception("worker %s: error while claiming a job", self.worker_id)
                worked = False
            if not worked:
                self._stop.wait(self._settings.poll_seconds)

    def start(self, threads: int = 1) -> None:
        self._stop.clear()
        for n in range(threads):
            thread = threading.Thread(target=self.run_forever, name=f"wenda-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
