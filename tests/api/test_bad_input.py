"""What a fault probe broke, kept broken no more: hostile metadata, blank questions, validation errors that
name their field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.components import Components, build_components
from app.db.models import Document
from app.main import create_app
from app.rag.embedding import Vectors
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.conftest import make_settings
from tests.fakes import FakeChatModel, FakeEmbedder


def test_deeply_nested_metadata_is_a_400_naming_it(client: TestClient) -> None:
    for nested in ("[" * 10_000 + "]" * 10_000, '{"a":' * 5_000 + "1" + "}" * 5_000, "[" * 10_000):
        error = assert_envelope(
            upload(client, "c", "a.txt", b"text", data={"metadata": '{"k":' + nested + "}"}), 400
        )
        assert error["param"] == "metadata" and "nested" in error["message"]
    # Brackets inside strings are text, not nesting.
    assert (
        upload(client, "c", "b.txt", b"text b", data={"metadata": json.dumps({"k": "[" * 100})}).status_code
        == 202
    )


def test_oversized_metadata_is_a_400(client: TestClient) -> None:
    error = assert_envelope(
        upload(client, "c", "a.txt", b"text", data={"metadata": json.dumps({"k": "x" * 70_000})}), 400
    )
    assert error["param"] == "metadata" and "larger" in error["message"]


def test_a_lone_surrogate_is_refused_and_stored_ones_never_break_reads(
    client: TestClient, services: Components
) -> None:
    for raw in ('{"k":"\\ud800"}', '{"\\udfff":1}', '{"k":["ok","\\udc00x"]}'):
        error = assert_envelope(upload(client, "c", "a.txt", b"text", data={"metadata": raw}), 400)
        assert error["param"] == "metadata" and "surrogate" in error["message"]
    # A pair is a real character and is kept.
    paired = upload(client, "c", "p.txt", b"paired", data={"metadata": '{"k":"\\ud83d\\ude00"}'})
    assert paired.status_code == 202
    assert client.get(f"/v1/documents/{paired.json()['document_id']}").json()["metadata"] == {"k": "😀"}
    # A row stored before the check existed: reads of it, and of its whole collection, still answer.
    poisoned = upload(client, "c", "old.txt", b"old text").json()["document_id"]
    with services.session_factory() as session:
        session.get(Document, poisoned).metadata_json = {"k": "\ud800", "\udfff": ["\ud800"]}  # type: ignore[union-attr]
        session.commit()
    shown = client.get(f"/v1/documents/{poisoned}")
    assert shown.status_code == 200 and shown.json()["metadata"] == {"k": "?", "?": ["?"]}
    assert client.get("/v1/collections/c/documents").status_code == 200


def test_blank_questions_and_queries_are_422s_naming_the_field(client: TestClient) -> None:
    upload(client, "kb", "a.txt", b"some text")
    for blank in ("   ", "\n\t ", "\u3000"):
        error = assert_envelope(client.post("/v1/ask", json={"collection": "kb", "question": blank}), 422)
        assert error["param"] == "question"
        error = assert_envelope(client.post("/v1/retrieve", json={"collection": "kb", "query": blank}), 422)
        assert error["param"] == "query"
    chat = {"model": "m", "collection": "kb", "messages": [{"role": "user", "content": "  "}]}
    assert client.post("/v1/chat/completions", json=chat).status_code in (400, 422)


def test_validation_errors_name_their_field(client: TestClient) -> None:
    assert (
        assert_envelope(client.post("/v1/retrieve", json={"collection": "c", "query": ""}), 422)["param"]
        == "query"
    )
    assert (
        assert_envelope(client.post("/v1/retrieve", json={"collection": "c", "query": "q", "top_k": 0}), 422)[
            "param"
        ]
        == "top_k"
    )
    malformed = assert_envelope(
        client.post("/v1/retrieve", content=b'{"collection": ', headers={"content-type": "application/json"}),
        422,
    )
    assert malformed["param"] is None and "not valid JSON" in malformed["message"]
    missing = assert_envelope(client.post("/v1/retrieve"), 422)
    assert "body" in missing["message"]
    nested = assert_envelope(
        client.post(
            "/v1/ask", json={"collection": "c", "question": "q", "history": [{"role": "x", "content": "y"}]}
        ),
        422,
    )
    assert nested["param"] == "history.0.role"


def test_the_templates_listed_are_the_ones_a_request_may_name(client: TestClient) -> None:
    listed = {t["name"] for t in client.get("/v1/templates").json()["templates"]}
    upload(client, "kb", "a.txt", b"some text")
    error = assert_envelope(
        client.post("/v1/ask", json={"collection": "kb", "question": "q", "template": "nope"}), 404
    )
    offered = set(error["message"].split("available: ", 1)[1].split(", "))
    assert listed == offered and "rewrite" not in listed
    assert_envelope(
        client.post("/v1/ask", json={"collection": "kb", "question": "q", "template": "rewrite"}), 404
    )


def _raw_upload(client: TestClient, filename: bytes, content: bytes) -> Any:
    """A multipart upload with the filename's bytes as written (clients percent-encode control characters;
    curl and hostile clients do not)."""
    boundary = b"wenda-raw-boundary"
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return client.post(
        "/v1/collections/c/documents",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=" + boundary.decode()},
    )


def test_filenames_are_normalised_alike_on_every_database(client: TestClient) -> None:
    nul = _raw_upload(client, b"re\x00port\x07.txt", b"first file")
    assert nul.status_code == 202, nul.text
    assert nul.json()["filename"] == "report.txt" and "control" in nul.json()["notes"][0]
    shown = client.get(f"/v1/documents/{nul.json()['document_id']}").json()
    assert shown["filename"] == "report.txt"

    long = upload(client, "c", "长" * 600 + ".md", b"# second file")
    assert long.status_code == 202, long.text
    stored = long.json()["filename"]
    assert len(stored) == 255 and stored.endswith(".md") and "shortened" in long.json()["notes"][0]

    plain = upload(client, "c", "plain.txt", b"third file").json()
    assert plain["filename"] == "plain.txt" and plain["notes"] == []


def test_an_upload_whose_row_cannot_be_written_leaves_no_file(
    client: TestClient, services: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.db import documents as db_documents

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the database refused the row")

    monkeypatch.setattr(db_documents, "create_document_with_job", fail)
    # The server's own 500, not the test client re-raising the error.
    answering = TestClient(client.app, raise_server_exceptions=False)
    response = answering.post("/v1/collections/c/documents", files={"file": ("a.txt", b"never stored")})
    assert response.status_code == 500 and "refused" not in response.text
    assert list(services.settings.upload_dir.iterdir()) == []


# Item 5: unpunctuated Chinese, per-document limits.


@pytest.fixture
def limited_client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        worker={"poll_seconds": 0.05, "lease_seconds": 5},
        chunking={"max_document_characters": 30_000, "max_document_chunks": 40},
    )
    built = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    try:
        with TestClient(create_app(components=built)) as test_client:
            yield test_client
    finally:
        built.worker.stop()
        built.close_database()


def test_unpunctuated_chinese_becomes_full_size_chunks(client: TestClient, services: Components) -> None:
    # The probe's 5 MB of one character became 87,382 chunks of 23 characters; at this size, 1,000 of them.
    text = "啊" * 20_000
    created = upload(client, "c", "flat.txt", text.encode()).json()
    assert wait_for_job(client, created["job_id"])["status"] == "done"
    document = client.get(f"/v1/documents/{created['document_id']}").json()
    target = services.settings.chunking.chunk_tokens
    # FakeEmbedder counts a Chinese character as one token: ~256-token windows overlapping by ~32.
    assert document["chunk_count"] <= len(text) // (target - 40) + 1


def test_documents_past_the_per_document_limits_fail_with_the_reason(limited_client: TestClient) -> None:
    too_long = upload(limited_client, "c", "long.txt", ("很长的文本。" * 6_000).encode()).json()
    job = wait_for_job(limited_client, too_long["job_id"])
    assert job["status"] == "failed"
    assert "36,000 characters" in job["error"] and "chunking.max_document_characters" in job["error"]
    too_many = upload(limited_client, "c", "many.txt", ("第一句话。\n\n" * 4_000).encode()).json()
    job = wait_for_job(limited_client, too_many["job_id"])
    assert job["status"] == "failed" and "chunking.max_document_chunks" in job["error"]
    assert limited_client.get(f"/v1/documents/{too_many['document_id']}").json()["status"] == "failed"
    # Within the limits, the same service ingests as usual.
    fine = upload(limited_client, "c", "fine.txt", "短文本。".encode()).json()
    assert wait_for_job(limited_client, fine["job_id"])["status"] == "done"


# Item 10: job progress moves within the embed stage.


class _SlowEmbedder(FakeEmbedder):
    """Takes a while per batch, as a real model does on a CPU."""

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        time.sleep(0.2)
        return super().embed_passages(texts)


def test_job_progress_moves_through_the_embed_stage(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        worker={"poll_seconds": 0.05, "lease_seconds": 3},
        embedding={"batch_size": 4},
    )
    built = build_components(settings, embedder=_SlowEmbedder(), llm=FakeChatModel())
    try:
        with TestClient(create_app(components=built)) as client:
            text = "\n\n".join(f"第{i}段。" + "文件权限由三组位组成，分别属于所有者、组和其他人。" * 8 for i in range(120))
            job_id = upload(client, "c", "long.txt", text.encode()).json()["job_id"]
            seen: list[tuple[str, float]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                job = client.get(f"/v1/jobs/{job_id}").json()
                seen.append((job["stage"], job["progress"]))
                if job["status"] in ("done", "failed"):
                    break
                time.sleep(0.1)
            assert job["status"] == "done"
            within_embed = sorted({p for stage, p in seen if stage == "embed" and 0.2 < p < 0.95})
            # The heartbeat writes progress about once a second: a 6-second embed shows several values.
            assert len(within_embed) >= 3, seen
    finally:
        built.worker.stop()
        built.close_database()


# Item 4, SQLite: concurrent writers wait for each other (WAL, busy timeout) instead of "database is locked".


def test_concurrent_uploads_while_the_worker_writes_all_succeed(live_url: str) -> None:
    def one(i: int) -> int:
        with httpx.Client(base_url=live_url, timeout=60) as client:
            text = f"第{i}号文件。" + "文件权限由三组位组成。" * 50
            return client.post(
                "/v1/collections/busy/documents", files={"file": (f"f{i}.txt", text.encode())}
            ).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(one, range(64)))
    assert codes == [202] * 64
    with httpx.Client(base_url=live_url, timeout=60) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listing = client.get("/v1/collections/busy/documents", params={"limit": 100}).json()
            if all(d["status"] == "ready" for d in listing["documents"]):
                break
            time.sleep(0.2)
        assert listing["total"] == 64 and all(d["status"] == "ready" for d in listing["documents"])
