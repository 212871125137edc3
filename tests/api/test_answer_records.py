"""Every answer is recorded, from both endpoints, streamed or not, cancelled too; records are the tenant's own;
slow streams keep proxies awake with SSE comments."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.components import Components, build_components
from app.config import Settings
from app.db import documents as db_documents
from app.db.models import AnswerRecord, utcnow
from app.main import create_app
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.conftest import make_settings, served_on_loopback
from tests.fakes import FakeEmbedder, ScriptedChatModel

DOCUMENT = "# 文件权限\n\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的用户删除。\n"
QUESTION = "给目录设置粘滞位有什么作用？"
ASK = {"collection": "kb", "question": QUESTION}
CHAT = {"model": "fake-model", "collection": "kb", "messages": [{"role": "user", "content": QUESTION}]}


def _ready(client: TestClient | httpx.Client) -> None:
    job = upload(client, "kb", "perm.md", DOCUMENT.encode()).json()["job_id"]  # type: ignore[arg-type]
    assert wait_for_job(client, job)["status"] == "done"


def _record(client: TestClient | httpx.Client, services: Components, query_id: str) -> dict[str, Any]:
    services.answer_log.flush()
    response = client.get(f"/v1/queries/{query_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def _sse_data(text: str) -> list[Any]:
    return [
        json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_ask_and_chat_answers_are_recorded_streamed_or_not(client: TestClient, services: Components) -> None:
    _ready(client)
    plain = client.post("/v1/ask", json=ASK).json()
    record = _record(client, services, plain["query_id"])
    assert record["endpoint"] == "ask" and record["status"] == "answered" and record["grounded"] is True
    assert record["question"] == QUESTION and record["collection"] == "kb"
    assert record["answer"] == plain["answer"] and record["raw_answer"]
    assert record["citations"][0]["quote"] == plain["citations"][0]["quote"]
    assert record["messages"][0]["role"] == "system" and QUESTION in record["messages"][-1]["content"]
    assert record["evidence"][0]["kind"] == "document" and record["evidence"][0]["packed"] is True
    assert record["usage"]["prompt_tokens"] > 0 and "generate" in record["timings"]
    assert len(record["template_version"]) == 64

    streamed = client.post("/v1/ask", json={**ASK, "stream": True})
    done = _sse_data(streamed.text)[-1]
    assert _record(client, services, done["query_id"])["status"] == "answered"

    chat = client.post("/v1/chat/completions", json=CHAT).json()
    assert _record(client, services, chat["query_id"])["endpoint"] == "chat"

    chat_streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    last = _sse_data(chat_streamed.text)[-1]
    chat_record = _record(client, services, last["query_id"])
    assert chat_record["endpoint"] == "chat" and chat_record["status"] == "answered"

    refused = client.post(
        "/v1/ask", json={"collection": "kb", "question": "exFAT 的粘滞位有什么作用？"}
    ).json()
    assert refused["refusal"]["reason"] == "unmentioned_name"
    refused_record = _record(client, services, refused["query_id"])
    assert refused_record["status"] == "refused" and refused_record["refusal_reason"] == "unmentioned_name"
    assert refused_record["raw_answer"] == ""  # the model was never asked


def test_another_tenants_query_id_is_not_found(client: TestClient, services: Components) -> None:
    _ready(client)
    mine = client.post("/v1/ask", json=ASK).json()["query_id"]
    with services.session_factory() as session:
        other = db_documents.get_or_create_tenant(session, name="other").id
        session.commit()
    answer = services.answer_log.get(tenant_id=services.default_tenant_id, query_id=mine)
    assert answer.query_id == mine
    # A record of the other tenant's, written the same way an answer of theirs would be.
    services.answer_log.flush()
    with services.session_factory() as session:
        stored = session.query(AnswerRecord).filter_by(query_id=mine).one()
        stored.tenant_id = other
        session.commit()
    assert_envelope(client.get(f"/v1/queries/{mine}"), 404, "not_found")
    assert_envelope(client.get("/v1/queries/nonexistent"), 404, "not_found")


def test_records_past_retention_are_pruned(client: TestClient, services: Components) -> None:
    _ready(client)
    query_id = client.post("/v1/ask", json=ASK).json()["query_id"]
    services.answer_log.flush()
    log = services.answer_log
    assert log.prune() == 0
    log._clock = lambda: utcnow() + timedelta(days=services.settings.answers.retention_days + 1)  # type: ignore[method-assign]
    assert log.prune() == 1
    assert_envelope(client.get(f"/v1/queries/{query_id}"), 404)


def test_answers_still_queued_at_shutdown_are_written(settings: Settings) -> None:
    services = build_components(settings, embedder=FakeEmbedder(), llm=ScriptedChatModel("x"))
    with TestClient(create_app(components=services)) as client:
        _ready(client)
        query_ids = {client.post("/v1/ask", json=ASK).json()["query_id"] for _ in range(20)}
    # No flush: the lifespan's end closed the log, which writes whatever was still queued.
    with services.session_factory() as session:
        stored = {r.query_id for r in session.query(AnswerRecord)}
    assert query_ids <= stored
    services.engine.dispose()


@pytest.fixture
def slow_live(tmp_path: Any, database_url: str) -> Iterator[tuple[str, Components, ScriptedChatModel]]:
    """A real server whose model writes one 4-character delta every 0.3 s, with keep-alives every 0.1 s."""
    settings = make_settings(
        tmp_path / "data",
        database_url,
        worker={"poll_seconds": 0.05, "lease_seconds": 5},
        sse_keepalive_seconds=0.1,
    )
    llm = ScriptedChatModel(
        "给目录设置粘滞位将保护该目录内的文件不被其所有者之外的用户删除 [1]。", seconds_per_delta=0.3
    )
    services = build_components(settings, embedder=FakeEmbedder(), llm=llm)
    with served_on_loopback(create_app(components=services)) as url:
        yield url, services, llm
    services.engine.dispose()


def test_a_slow_stream_sends_keepalive_comments_to_a_real_client(
    slow_live: tuple[str, Components, ScriptedChatModel],
) -> None:
    url, _services, _llm = slow_live
    with httpx.Client(base_url=url, timeout=30) as http:
        _ready(http)
        with http.stream("POST", "/v1/ask", json={**ASK, "stream": True}) as response:
            lines = list(response.iter_lines())
    comments = [line for line in lines if line.startswith(":")]
    assert len(comments) >= 3, lines[:20]
    assert any(line.startswith("event: done") for line in lines)


def test_a_client_that_disconnects_mid_stream_is_recorded_as_cancelled(
    slow_live: tuple[str, Components, ScriptedChatModel],
) -> None:
    url, services, llm = slow_live
    with httpx.Client(base_url=url, timeout=30) as http:
        _ready(http)
        for body, path in ((ASK, "/v1/ask"), (CHAT, "/v1/chat/completions")):
            query_id = None
            with http.stream("POST", path, json={**body, "stream": True}) as response:
                for line in response.iter_lines():
                    # The first text delta of either shape: /v1/ask's event, or a chat chunk with content.
                    if line.startswith("event: delta") or (
                        '"content": "' in line and '"content": ""' not in line
                    ):
                        break
                # Leaving the block closes the connection mid-stream.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and query_id is None:
                services.answer_log.flush()
                with services.session_factory() as session:
                    endpoint = "ask" if path == "/v1/ask" else "chat"
                    rows = session.query(AnswerRecord).filter_by(endpoint=endpoint, status="cancelled").all()
                    cancelled = list(rows)
                    if cancelled:
                        query_id = cancelled[-1].query_id
                time.sleep(0.1)
            assert query_id is not None, f"{path}: no cancelled record"
            record = http.get(f"/v1/queries/{query_id}").json()
            assert record["status"] == "cancelled" and 0 < len(record["raw_answer"]) < len(llm.reply)
    assert llm.cancelled


def test_an_answer_goes_out_even_when_its_record_cannot_be_written(settings: Settings) -> None:
    services = build_components(settings, embedder=FakeEmbedder(), llm=ScriptedChatModel("x"))
    with TestClient(create_app(components=services)) as client:
        _ready(client)
        with services.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE answers RENAME TO answers_gone")
        try:
            response = client.post("/v1/ask", json=ASK)
            assert response.status_code == 200 and response.json()["query_id"]
            # Written on the request's thread when no writer runs (the command line): still no error.
            services.answer_log.close()
            started = client.post("/v1/ask", json=ASK)
            assert started.status_code == 200
        finally:
            with services.engine.begin() as connection:
                connection.exec_driver_sql("ALTER TABLE answers_gone RENAME TO answers")
    services.engine.dispose()
