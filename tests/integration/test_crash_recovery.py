"""Kill ``wenda worker`` processes with SIGKILL at random points of a 50-document ingest, restart, and check
that every document ends ``done`` exactly once and that SQL and the FAISS index agree."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.components import build_components
from app.db import documents as db_documents
from app.db.models import Chunk, Document, Job
from app.rag.faiss_store import stored_ids
from app.services import documents as uploads
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = 50


def _document_text(n: int) -> str:
    topics = ["文件系统", "软件包", "网络配置", "用户权限", "系统启动", "备份", "Git branches", "submodules"]
    paragraphs = [
        f"# 第 {n} 篇：{topics[n % len(topics)]}\n",
        *(
            f"这是第 {n} 篇文档的第 {p} 段。它讨论{topics[(n + p) % len(topics)]}的细节，"
            f"并给出编号 {n * 100 + p} 的示例命令。This paragraph {p} of document {n} is in English too."
            for p in range(12)
        ),
    ]
    return "\n\n".join(paragraphs)


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkilled_workers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    worker_settings = {"lease_seconds": 2, "poll_seconds": 0.1, "max_attempts": 20}
    services = build_components(make_settings(data_dir, worker=worker_settings))
    with services.session_factory() as session:
        tenant = db_documents.get_or_create_tenant(session, name="default")
        session.commit()
        for n in range(DOCUMENTS):
            uploads.accept_upload(
                session,
                tenant_id=tenant.id,
                collection_name="crash",
                filename=f"doc-{n:02d}.md",
                data=_document_text(n).encode(),
                metadata={},
                upload_dir=services.settings.upload_dir,
                embedding_model=services.embedder.name,
            )

    env = {
        **os.environ,
        "WENDA_DATA_DIR": str(data_dir),
        "WENDA_WORKER__LEASE_SECONDS": "2",
        "WENDA_WORKER__POLL_SECONDS": "0.1",
        "WENDA_WORKER__MAX_ATTEMPTS": "20",
        "WENDA_LOG_LEVEL": "WARNING",
    }
    def statuses() -> dict[str, int]:
        with services.session_factory() as session:
            rows = session.execute(select(Job.status, func.count(Job.id)).group_by(Job.status))
            return {status: count for status, count in rows}

    def claims_of(worker: subprocess.Popen[bytes]) -> int:
        """Jobs this worker process has claimed (worker ids are host:pid:nonce)."""
        with services.session_factory() as session:
            claimed = select(func.count(Job.id)).where(Job.worker_id.like(f"%:{worker.pid}:%"))
            return session.scalar(claimed) or 0

    rng = random.Random(20261122)
    for _ in range(8):
        worker = _start_worker(env)
        # Kill it mid-job: wait for the state (a job claimed by this process), not for a time, because a worker
        # takes from one to twenty seconds to start on a busy 2-core machine.
        deadline = time.monotonic() + 300
        while claims_of(worker) == 0 and statuses().get("done", 0) < DOCUMENTS:
            assert worker.poll() is None, "the worker exited on its own"
            assert time.monotonic() < deadline, "no job was claimed within 300 s"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 2.0))
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    interrupted_before_restart = statuses()
    worker = _start_worker(env)
    try:
        deadline = time.monotonic() + 600
        while statuses().get("done", 0) + statuses().get("failed", 0) < DOCUMENTS:
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    with services.session_factory() as session:
        jobs = session.scalars(select(Job)).all()
        documents = session.scalars(select(Document)).all()
        assert len(jobs) == DOCUMENTS and len(documents) == DOCUMENTS
        assert {job.status for job in jobs} == {"done"}, [(j.id, j.status, j.error) for j in jobs]
        assert {document.status for document in documents} == {"ready"}
        # The kills really did land mid-job: some jobs needed more than one attempt.
        assert max(job.attempts for job in jobs) > 1, interrupted_before_restart
        retried = sum(job.attempts > 1 for job in jobs)
        print(
            f"\ncrash test: 8 SIGKILLs; {retried} jobs needed more than one attempt; before restart {interrupted_before_restart}"
        )
        for document in documents:
            ordinals = session.scalars(
                select(Chunk.ordinal).where(Chunk.document_id == document.id).order_by(Chunk.ordinal)
            ).all()
            assert list(ordinals) == list(range(document.chunk_count)) and document.chunk_count > 0
        collection = db_documents.get_collection(session, tenant_id=documents[0].tenant_id, name="crash")
        assert collection is not None
        ready = db_documents.ready_chunk_ids(session, collection_id=collection.id)
        total_chunks = session.scalar(select(func.count(Chunk.id))) or 0

    index_ids = stored_ids(services.store.load(collection.id))
    assert len(index_ids) == len(set(index_ids)), "duplicate ids in the index"
    assert set(index_ids) == ready
    assert len(ready) == total_chunks
    services.engine.dispose()
