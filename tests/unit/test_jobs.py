"""Generic jobs: enqueue any kind, back off between retries, dispatch by kind; SQLite and PostgreSQL alike."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app.config import WorkerSettings
from app.db import documents as db_documents
from app.db import jobs as db_jobs
from app.db.models import Document, Job, utcnow
from app.db.session import MIGRATIONS_DIR, create_db_engine, create_session_factory, migrate
from app.db.statuses import DocumentStatus, JobKind, JobStatus
from ingest.pipeline import IngestOutcome, ProgressCallback
from ingest.worker import JobFailedError, JobOutcome, Worker

BASE_SECONDS = 0.5


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine, _ = create_db_engine(database_url)
    migrate(engine)
    yield create_session_factory(engine)
    engine.dispose()


def _settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "poll_seconds": 0.05,
        "lease_seconds": 5,
        "max_attempts": 3,
        "retry_base_seconds": BASE_SECONDS,
        "retry_cap_seconds": 5,
        "retry_jitter": "equal",
    }
    values.update(overrides)
    return WorkerSettings(**values)


def _tenant(session: Session) -> int:
    tenant_id = db_documents.get_or_create_tenant(session, name="t").id
    session.commit()
    return tenant_id


def _document_with_job(
    session: Session, tenant_id: int, *, size_bytes: int = 1, content_hash: str = "a" * 64
) -> tuple[int, int]:
    collection = db_documents.get_or_create_collection(
        session, tenant_id=tenant_id, name="c", embedding_model="m"
    )
    created = db_documents.create_document_with_job(
        session,
        collection=collection,
        filename=f"{content_hash[:8]}.txt",
        content_hash=content_hash,
        size_bytes=size_bytes,
        mime="text/plain",
        file_type="text",
        metadata={},
    )
    assert created is not None
    session.commit()
    return created[0].id, created[1].id


def _job(factory: sessionmaker[Session], job_id: int) -> Job:
    with factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _document_status(factory: sessionmaker[Session], document_id: int) -> str:
    with factory() as session:
        return session.scalars(sa.select(Document.status).where(Document.id == document_id)).one()


def _at(moment: datetime | None) -> datetime:
    aware = db_jobs.as_utc(moment)
    assert aware is not None
    return aware


# The schedule itself.


@pytest.mark.parametrize("jitter", ["equal", "full"])
def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_inside_its_bounds(
    jitter: Literal["equal", "full"],
) -> None:
    rng = random.Random(7)
    base, cap = 2.0, 300.0
    for failed in range(1, 14):
        exponential = min(cap, base * 2 ** (failed - 1))  # 2, 4, 8, ... 256, then 300 from the 9th failure
        low = exponential / 2 if jitter == "equal" else 0.0
        delays = [
            db_jobs.retry_delay_seconds(
                failed_attempts=failed,
                base_seconds=base,
                cap_seconds=cap,
                jitter=jitter,
                rng=rng,
            )
            for _ in range(500)
        ]
        assert all(low <= delay <= exponential for delay in delays), (failed, min(delays), max(delays))
        # Jitter really spreads the delays over the whole band, not one point of it.
        assert min(delays) < low + 0.1 * exponential and max(delays) > exponential - 0.1 * exponential
    # However many failures, never past the cap (and no float overflow on the way).
    assert (
        db_jobs.retry_delay_seconds(failed_attempts=5000, base_seconds=base, cap_seconds=cap, jitter="full")
        <= cap
    )
    with pytest.raises(ValueError):
        db_jobs.retry_delay_seconds(failed_attempts=0, base_seconds=base, cap_seconds=cap, jitter="equal")


def test_the_settings_describe_the_backoff_and_refuse_a_cap_below_the_base() -> None:
    defaults = WorkerSettings()
    assert (defaults.retry_base_seconds, defaults.retry_cap_seconds, defaults.retry_jitter) == (
        2.0,
        300.0,
        "equal",
    )
    for name in ("retry_base_seconds", "retry_cap_seconds", "retry_jitter"):
        assert WorkerSettings.model_fields[name].description
    with pytest.raises(ValidationError, match="retry_cap_seconds"):
        WorkerSettings(retry_base_seconds=10, retry_cap_seconds=1)


def test_statuses_are_their_stored_strings() -> None:
    assert [s.value for s in DocumentStatus] == ["queued", "processing", "ready", "failed"]
    assert [s.value for s in JobStatus] == ["queued", "running", "done", "failed"]
    assert [k.value for k in JobKind] == ["ingest", "train", "export"]
    assert JobStatus.DONE == "done" and f"{DocumentStatus.READY}" == "ready"


# The queue.


def test_a_job_of_any_kind_is_enqueued_and_not_claimed_before_its_run_after(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session:
        tenant_id = _tenant(session)
        waiting = db_jobs.enqueue_job(
            session, tenant_id=tenant_id, kind=JobKind.TRAIN, payload={"model": "m"}
        )
        session.commit()
        assert (waiting.document_id, waiting.status, waiting.attempts) == (None, JobStatus.QUEUED, 0)
        with pytest.raises(ValueError, match="document_id"):
            db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.INGEST, payload={})

        claimed = db_jobs.claim_next_job(session, worker_id="w1", lease_seconds=5)
        assert claimed is not None and claimed.id == waiting.id
        assert (claimed.kind, claimed.payload, claimed.status) == ("train", {"model": "m"}, JobStatus.RUNNING)
        assert isinstance(claimed.status, JobStatus)
        assert db_jobs.fail_job(
            session, job_id=waiting.id, worker_id="w1", error="boom", retry=True, retry_delay_seconds=60
        )
        session.commit()

        # Waiting out its backoff: not claimable, and the failure stays on the job meanwhile.
        assert db_jobs.claim_next_job(session, worker_id="w2", lease_seconds=5) is None
        job = _job(factory, waiting.id)
        assert (job.status, job.error, job.worker_id) == (JobStatus.QUEUED, "boom", None)
        assert _at(job.run_after) > utcnow() + timedelta(seconds=55)

        # A newer job that is due goes first.
        due = db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.EXPORT, payload={})
        session.commit()
        claimed = db_jobs.claim_next_job(session, worker_id="w2", lease_seconds=5)
        assert claimed is not None and claimed.id == due.id


def test_a_job_that_fails_twice_then_succeeds_backs_off_between_attempts(
    factory: sessionmaker[Session],
) -> None:
    calls: list[float] = []

    def fails_twice(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        calls.append(time.monotonic())
        progress("train", 0.5)
        if len(calls) <= 2:
            raise RuntimeError("flaky")
        return JobOutcome(timings={"train": 0.01})

    worker = Worker(session_factory=factory, settings=_settings(), handlers={JobKind.TRAIN: fails_twice})
    with factory() as session:
        job_id = db_jobs.enqueue_job(session, tenant_id=_tenant(session), kind=JobKind.TRAIN, payload={}).id
        session.commit()

    delays: list[float] = []
    for failed in (1, 2):
        before = utcnow()
        assert worker.run_once()
        after = utcnow()
        job = _job(factory, job_id)
        assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, failed, None)
        assert job.error is not None and "RuntimeError" in job.error and "retried" in job.error
        # Equal jitter: between half and all of base * 2 ** (failed - 1), counted from the failure.
        exponential = BASE_SECONDS * 2 ** (failed - 1)
        run_after = _at(job.run_after)
        assert (
            before + timedelta(seconds=exponential / 2) <= run_after <= after + timedelta(seconds=exponential)
        )
        delays.append((run_after - after).total_seconds())
        # Not due yet: the worker finds nothing to do until the backoff has passed.
        assert not worker.run_once()
        time.sleep(max(0.0, (run_after - utcnow()).total_seconds()) + 0.02)

    assert worker.run_once()
    job = _job(factory, job_id)
    assert (job.status, job.attempts, job.error, job.stage, job.progress) == (
        JobStatus.DONE,
        3,
        None,
        "train",
        1.0,
    )
    assert job.timings == {"train": 0.01}
    # The attempts really were spread out by the backoff, the second wait at least the first one's base.
    assert len(calls) == 3
    assert calls[1] - calls[0] >= BASE_SECONDS / 2
    assert calls[2] - calls[1] >= BASE_SECONDS
    assert delays[1] > delays[0] - 0.05  # the second failure's delay is drawn from a band twice as high


class _FlakyPipeline:
    """Stands in for IngestPipeline: fails its first run, then ingests three chunks."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self.seen: list[tuple[int, str]] = []

    def run(self, document_id: int, progress: ProgressCallback) -> IngestOutcome:
        self.seen.append((document_id, _document_status(self._factory, document_id)))
        progress("parse", 0.0)
        if len(self.seen) == 1:
            raise OSError("disk hiccup")
        progress("index", 0.95)
        return IngestOutcome(chunk_count=3, timings={"parse": 0.5})


def test_the_worker_dispatches_by_kind_and_ingest_moves_its_document_along(
    factory: sessionmaker[Session],
) -> None:
    trained: list[dict[str, Any]] = []

    def train(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        trained.append(dict(payload))
        return JobOutcome()

    pipeline = _FlakyPipeline(factory)
    worker = Worker(
        session_factory=factory,
        settings=_settings(retry_base_seconds=0.6, retry_cap_seconds=0.6),
        pipeline=pipeline,  # type: ignore[arg-type]
        handlers={JobKind.TRAIN: train},
    )
    with factory() as session:
        tenant_id = _tenant(session)
        document_id, ingest_id = _document_with_job(session, tenant_id)
        train_id = db_jobs.enqueue_job(
            session, tenant_id=tenant_id, kind=JobKind.TRAIN, payload={"adapter": "qa-lora"}
        ).id
        session.commit()
    assert _job(factory, ingest_id).payload == {"document_id": document_id}

    assert worker.run_once()  # the ingest job, oldest first: fails once
    assert _document_status(factory, document_id) == DocumentStatus.QUEUED  # while its retry waits
    assert _job(factory, ingest_id).status == JobStatus.QUEUED
    assert worker.run_once()  # the train job, due while the ingest job waits
    assert trained == [{"adapter": "qa-lora"}]
    assert _job(factory, train_id).status == JobStatus.DONE
    time.sleep(0.65)
    assert worker.run_once()  # the ingest job again: succeeds
    assert pipeline.seen == [(document_id, "processing"), (document_id, "processing")]
    job = _job(factory, ingest_id)
    assert (job.status, job.attempts, job.error, job.stage) == (JobStatus.DONE, 2, None, "index")
    with factory() as session:
        document = db_documents.get_document_for_job(session, document_id=document_id)
        assert document is not None and (document.status, document.chunk_count) == ("ready", 3)
        assert db_documents.latest_job_for_document(session, document_id=document_id) is not None
    assert not worker.run_once()


def test_a_handler_that_says_the_job_cannot_succeed_fails_it_without_retrying(
    factory: sessionmaker[Session],
) -> None:
    def broken(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        raise JobFailedError("the file is encrypted")

    worker = Worker(session_factory=factory, settings=_settings(), handlers={JobKind.INGEST: broken})
    with factory() as session:
        document_id, job_id = _document_with_job(session, _tenant(session))
    assert worker.run_once()
    job = _job(factory, job_id)
    assert (job.status, job.attempts, job.error) == (
        JobStatus.FAILED,
        1,
        "the file is encrypted",
    )
    assert _document_status(factory, document_id) == DocumentStatus.FAILED


def test_a_job_of_a_kind_without_a_handler_fails_with_a_clear_error(factory: sessionmaker[Session]) -> None:
    worker = Worker(
        session_factory=factory, settings=_settings(), handlers={JobKind.TRAIN: lambda p, _: JobOutcome()}
    )
    with factory() as session:
        tenant_id = _tenant(session)
        export_id = db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.EXPORT, payload={}).id
        # A kind this version has never heard of (written by a newer one) must not stop the worker either.
        future = Job(tenant_id=tenant_id, kind="distill", payload={}, status=JobStatus.QUEUED)
        session.add(future)
        session.commit()
        future_id = future.id
        train_id = db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.TRAIN, payload={}).id
        session.commit()

    for _ in range(3):
        assert worker.run_once()
    for job_id, kind in ((export_id, "export"), (future_id, "distill")):
        job = _job(factory, job_id)
        assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
        assert job.error == f"no handler for job kind {kind!r} (this worker runs: train)"
    assert _job(factory, train_id).status == JobStatus.DONE


# The migration.


def test_the_migration_backfills_existing_jobs_and_keeps_their_ids_retired(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from app.db.session import migration_connection

    engine, _ = create_db_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.exec_driver_sql(
            "INSERT INTO tenants (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            "INSERT INTO collections (id, tenant_id, name, embedding_model, index_version, created_at) "
            "VALUES (1, 1, 'c', 'm', 0, CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            "INSERT INTO documents (id, tenant_id, collection_id, filename, content_hash, size_bytes, mime, "
            "file_type, status, title, metadata, aliases, chunk_count, created_at, updated_at) VALUES "
            "(1, 1, 1, 'a.txt', 'h', 1, 'text/plain', 'text', 'ready', '', '{}', '[]', 1, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)"
        )
        for _ in range(3):
            connection.exec_driver_sql(
                "INSERT INTO jobs (tenant_id, document_id, kind, status, stage, progress, attempts, timings, "
                "created_at) VALUES (1, 1, 'ingest', 'done', 'index', 1.0, 1, '{}', CURRENT_TIMESTAMP)"
            )
        connection.exec_driver_sql("DELETE FROM jobs WHERE id = 3")
    migrate(engine)
    factory = create_session_factory(engine)
    with factory() as session:
        jobs = session.scalars(sa.select(Job).order_by(Job.id)).all()
        assert [(j.id, j.kind, j.payload, j.document_id, j.status) for j in jobs] == [
            (1, "ingest", {"document_id": 1}, 1, JobStatus.DONE),
            (2, "ingest", {"document_id": 1}, 1, JobStatus.DONE),
        ]
        assert all(j.run_after == j.created_at for j in jobs)
        # A job without a document fits now, and the deleted job's id is not handed out again.
        new = db_jobs.enqueue_job(session, tenant_id=1, kind=JobKind.EXPORT, payload={})
        session.commit()
        assert new.id > 3
        # Deleting the document still takes its jobs with it (the rebuilt table kept the cascade).
        session.execute(sa.delete(Document).where(Document.id == 1))
        session.commit()
        assert session.scalars(sa.select(Job.id)).all() == [new.id]
    engine.dispose()


def test_a_small_upload_is_not_queued_behind_large_ones(factory: sessionmaker[Session]) -> None:
    # Two large documents queued first hold the one general thread (and would hold any number of them); the
    # small-job thread takes the small upload at once.
    release_large = threading.Event()
    finished: list[int] = []

    def ingest(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        document_id = payload["document_id"]
        if document_id in large:
            assert release_large.wait(30)
        finished.append(document_id)
        return JobOutcome()

    settings = _settings(threads=1, small_job_threads=1, small_job_bytes=1_000_000)
    worker = Worker(session_factory=factory, settings=settings, handlers={JobKind.INGEST: ingest})
    with factory() as session:
        tenant_id = _tenant(session)
        large = [
            _document_with_job(session, tenant_id, size_bytes=5_000_000, content_hash=c * 64)[0] for c in "bc"
        ]
        small, _ = _document_with_job(session, tenant_id, size_bytes=2_000, content_hash="d" * 64)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while small not in finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert finished == [small]
        # The small-job thread never takes a large document, even with nothing else to do.
        assert _document_status(factory, large[1]) == DocumentStatus.QUEUED
        release_large.set()
        while len(finished) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(finished) == sorted([small, *large])
    finally:
        release_large.set()
        worker.stop()
    thread_names = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("wenda-worker") for name in thread_names)


def test_claiming_with_a_size_bound_takes_short_documentless_jobs_and_small_documents_only(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session:
        tenant_id = _tenant(session)
        _, large_job = _document_with_job(session, tenant_id, size_bytes=10, content_hash="e" * 64)
        train = db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.TRAIN, payload={}).id
        export = db_jobs.enqueue_job(session, tenant_id=tenant_id, kind=JobKind.EXPORT, payload={}).id
        _, small_job = _document_with_job(session, tenant_id, size_bytes=9, content_hash="f" * 64)
        session.commit()
        claimed = [db_jobs.claim_next_job(session, worker_id="w", lease_seconds=5, max_document_bytes=9)]
        claimed.append(db_jobs.claim_next_job(session, worker_id="w", lease_seconds=5, max_document_bytes=9))
        # Training runs for minutes: the small-job lane leaves it to the general one.
        assert [job.id for job in claimed if job] == [export, small_job]
        assert db_jobs.claim_next_job(session, worker_id="w", lease_seconds=5, max_document_bytes=9) is None
        unbounded = [db_jobs.claim_next_job(session, worker_id="w", lease_seconds=5) for _ in range(2)]
        assert [job.id for job in unbounded if job] == [large_job, train]
