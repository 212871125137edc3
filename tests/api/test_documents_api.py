"""The REST contract end to end on the fake embedder, against SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient

from app.components import Components
from app.db import documents as db_documents
from app.db.models import Collection
from app.main import create_app
from app.rag.faiss_store import stored_ids
from app.services.documents import accept_upload
from tests.fakes import FakeChatModel

CHINESE = (
    "# 文件权限\n\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的用户删除。\n\n"
    "# 软件包管理\n\n使用 apt 命令安装软件包，使用 apt-get update 更新软件包索引。\n"
)
ENGLISH = "# Branches\n\nA branch in Git is a movable pointer to a commit.\n\n# Remotes\n\nUse git fetch to download.\n"


def upload(client: TestClient, collection: str, name: str, content: bytes, **extra: Any) -> Any:
    return client.post(f"/v1/collections/{collection}/documents", files={"file": (name, content)}, **extra)


def wait_for_job(client: httpx.Client, job_id: int, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def assert_envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_upload_ingest_retrieve_delete(client: TestClient, services: Components) -> None:
    created = upload(
        client, "docs", "zh.md", CHINESE.encode(), data={"metadata": json.dumps({"team": "ops"})}
    )
    assert created.status_code == 202
    body = created.json()
    assert body["status"] == "queued" and body["duplicate"] is False
    english = upload(client, "docs", "git.txt", ENGLISH.encode()).json()

    job = wait_for_job(client, body["job_id"])
    assert job["status"] == "done" and job["stage"] == "index" and job["progress"] == 1.0
    assert set(job["timings"]) >= {"parse", "chunk", "embed", "index"}
    assert wait_for_job(client, english["job_id"])["status"] == "done"

    document = client.get(f"/v1/documents/{body['document_id']}").json()
    assert document["status"] == "ready" and document["metadata"] == {"team": "ops"}
    assert document["chunk_count"] >= 2 and document["title"] == "文件权限"

    result = client.post(
        "/v1/retrieve", json={"collection": "docs", "query": "粘滞位 有什么作用", "top_k": 3}
    )
    assert result.status_code == 200, result.text
    top = result.json()["chunks"][0]
    assert top["source"] == "zh.md" and "粘滞位" in top["text"]
    assert CHINESE[top["start"] : top["end"]] == top["text"]

    english_hit = client.post(
        "/v1/retrieve", json={"collection": "docs", "query": "git branch pointer"}
    ).json()
    assert english_hit["chunks"][0]["source"] == "git.txt"

    listing = client.get("/v1/collections").json()["collections"]
    assert [(c["name"], c["document_count"]) for c in listing] == [("docs", 2)]

    collection_id = next(c.id for c in _collections(services) if c.name == "docs")
    held_before = set(stored_ids(services.store.load(collection_id)))
    assert client.delete(f"/v1/documents/{body['document_id']}").status_code == 200
    # Its vectors left the index file too, not just SQL.
    held_after = set(stored_ids(services.store.load(collection_id)))
    assert held_after < held_before and all(i >> 20 != body["document_id"] for i in held_after)
    after = client.post("/v1/retrieve", json={"collection": "docs", "query": "粘滞位", "top_k": 10}).json()
    assert all(chunk["source"] != "zh.md" for chunk in after["chunks"])
    assert_envelope(client.get(f"/v1/documents/{body['document_id']}"), 404, "not_found")


def test_same_bytes_again_is_a_duplicate(client: TestClient) -> None:
    first = upload(client, "dup", "a.txt", b"hello duplicate world").json()
    again = upload(client, "dup", "renamed.txt", b"hello duplicate world")
    assert again.status_code == 200
    assert again.json()["document_id"] == first["document_id"] and again.json()["duplicate"] is True
    upload(client, "dup", "renamed.txt", b"hello duplicate world")
    document = client.get(f"/v1/documents/{first['document_id']}").json()
    assert document["filename"] == "a.txt" and document["aliases"] == ["renamed.txt"]
    assert wait_for_job(client, first["job_id"])["status"] == "done"
    chunk = client.post("/v1/retrieve", json={"collection": "dup", "query": "duplicate world"}).json()[
        "chunks"
    ][0]
    assert (chunk["source"], chunk["aliases"]) == ("a.txt", ["renamed.txt"])
    # Another collection is another namespace.
    assert upload(client, "other", "a.txt", b"hello duplicate world").status_code == 202


def test_bad_input_gets_the_envelope_never_a_5xx(client: TestClient, services: Components) -> None:
    services.settings.max_upload_bytes = 1000
    assert_envelope(upload(client, "c", "big.txt", b"x" * 1001), 413, "payload_too_large")
    assert_envelope(upload(client, "c", "setup.exe", b"MZ" + bytes(200)), 415, "unsupported_file_type")
    assert_envelope(upload(client, "c", "fake.pdf", b"just text, not a pdf"), 415, "unsupported_file_type")
    assert_envelope(upload(client, "c", "a.txt", b"ok", data={"metadata": "{not json"}), 400, "invalid_input")
    assert_envelope(upload(client, "c", "a.txt", b"ok", data={"metadata": "[1]"}), 400, "invalid_input")
    assert_envelope(upload(client, "-bad name!", "a.txt", b"ok"), 400, "invalid_input")
    assert_envelope(client.post("/v1/collections/c/documents"), 422, "validation_error")
    assert_envelope(client.post("/v1/retrieve", json={"collection": "c"}), 422, "validation_error")
    assert_envelope(client.post("/v1/retrieve", json={"collection": "c", "query": "q", "top_k": 0}), 422)
    assert_envelope(client.post("/v1/retrieve", json={"collection": "c", "query": "q", "top_k": 1000}), 400)
    assert_envelope(client.post("/v1/retrieve", json={"collection": "nope", "query": "q"}), 404, "not_found")
    assert_envelope(client.get("/v1/jobs/999999"), 404)
    assert_envelope(client.get("/v1/documents/abc"), 422)
    assert_envelope(client.delete("/v1/documents/999999"), 404)
    assert_envelope(client.get("/v1/collections/nope/documents"), 404)


def test_a_file_that_cannot_be_parsed_fails_its_job_with_a_reason(client: TestClient) -> None:
    broken = upload(client, "c", "broken.pdf", b"%PDF-1.4\n garbage that is no pdf structure").json()
    job = wait_for_job(client, broken["job_id"])
    assert job["status"] == "failed"
    assert "pdf" in job["error"].lower()
    document = client.get(f"/v1/documents/{broken['document_id']}").json()
    assert document["status"] == "failed" and document["error"] == job["error"]


def wait_ready(client: TestClient | httpx.Client, timeout: float = 20.0) -> dict[str, Any]:
    """/readyz once it is 200 (the chat model warms up on a thread after start-up)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body
        time.sleep(0.05)


def test_health_and_readiness(client: TestClient, services: Components) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert wait_ready(client) == {"status": "ready", "checks": {"database": "ok", "index": "ok", "chat_model": "ok"}}
    assert services.llm.warmed_up  # type: ignore[attr-defined]


def test_readiness_waits_for_the_chat_model_and_names_it_when_it_fails(services: Components) -> None:
    class Unpreparable(FakeChatModel):
        def warm_up(self) -> None:
            raise OSError("no space left on device")

    services.llm = Unpreparable()
    with TestClient(create_app(components=services)) as client:
        time.sleep(0.3)
        readiness = client.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.json() == {
            "status": "starting",
            "checks": {"chat_model": "failed: OSError; see the server log"},
        }
        # Everything that needs no model is served meanwhile.
        assert client.get("/v1/collections").status_code == 200


def _collections(services: Components) -> list[Collection]:
    with services.session_factory() as session:
        return db_documents.all_collections(session)


def test_ingesting_into_an_unreadable_index_rebuilds_it_from_sql(
    client: TestClient, services: Components
) -> None:
    first = upload(client, "heal", "one.txt", CHINESE.encode()).json()
    assert wait_for_job(client, first["job_id"])["status"] == "done"
    collection_id = next(c.id for c in _collections(services) if c.name == "heal")
    services.store.path(collection_id).write_bytes(b"torn")
    second = upload(client, "heal", "two.txt", ENGLISH.encode()).json()
    assert wait_for_job(client, second["job_id"])["status"] == "done"
    with services.session_factory() as session:
        ready = db_documents.ready_chunk_ids(session, collection_id=collection_id)
    assert set(stored_ids(services.store.load(collection_id))) == ready
    assert {i >> 20 for i in ready} == {first["document_id"], second["document_id"]}


def test_a_sphinx_page_is_ingested_with_its_sections(client: TestClient) -> None:
    from tests.unit.test_parsing import SPHINX_PAGE

    response = upload(client, "docs", "install.rst", SPHINX_PAGE.encode())
    assert response.status_code == 202, response.text
    assert wait_for_job(client, response.json()["job_id"])["status"] == "done"
    hits = client.post(
        "/v1/retrieve", json={"collection": "docs", "query": "Stop the worker before upgrading", "top_k": 3}
    ).json()["chunks"]
    found = next(hit for hit in hits if "Stop the worker before upgrading" in hit["text"])
    assert found["section"] == "Handbook > Install wenda > Upgrade"
    assert SPHINX_PAGE[found["start"] : found["end"]] == found["text"]


def test_an_ocr_job_moves_its_progress_page_by_page_and_the_document_names_its_ocr_pages(
    client: TestClient, services: Components
) -> None:
    from ingest.pipeline import STAGE_START, IngestPipeline
    from tests.unit.test_ocr import _page

    pages = [_page([(0, "Page one: opening hours")], width=600), _page([(0, "Page two: loan rules")], width=600)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    settings = services.settings
    # A pipeline of its own, run here, so that every progress report can be heard (the worker's heartbeat
    # only keeps the latest).
    pipeline = IngestPipeline(
        session_factory=services.session_factory,
        embedder=services.embedder,
        store=services.store,
        upload_dir=settings.upload_dir,
        chunking=settings.chunking,
        parse_timeout_seconds=120,
        parse_memory_mb=2048,
    )
    services.worker.stop()
    with services.session_factory() as session:
        outcome = accept_upload(
            session,
            tenant_id=services.default_tenant_id,
            collection_name="scans",
            filename="scan.tiff",
            data=buffer.getvalue(),
            metadata={},
            upload_dir=settings.upload_dir,
            embedding_model=services.embedder.name,
        )
        session.commit()
    heard: list[tuple[str, float]] = []
    pipeline.run(outcome.document_id, lambda stage, fraction: heard.append((stage, fraction)))
    parse_share = STAGE_START["chunk"] - STAGE_START["parse"]
    assert heard[:3] == [("parse", 0.0), ("parse", parse_share / 2), ("parse", parse_share)]
    document = client.get(f"/v1/documents/{outcome.document_id}").json()
    assert document["ocr_pages"] == [1, 2]
    assert document["file_type"] == "image" and document["mime"] == "image/tiff"
