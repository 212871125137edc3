"""Feedback over HTTP: ratings and corrections stored beside the answer, reviewed, approved, withdrawn; an
approved correction answers the same question and rewordings of it, cited as such, until withdrawn; ratings
move passages in ranking, within bounds; exports match their schemas. The tenant's own answers only."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.components import Components, build_components
from app.config import Settings
from app.db import documents as db_documents
from app.db.models import AnswerRecord, utcnow
from app.main import create_app
from app.rag.errors import NotFoundError
from app.services import feedback
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.conftest import make_settings
from tests.fakes import FakeChatModel, FakeEmbedder

# The fake model quotes the longest line of the first passage: each fact is a long line of its own.
PORTAL = "# Support portal\n\nThe support portal accepts attachments of up to 10 MB each, whatever their file format.\n"
TICKETS = "# Tickets\n\nTickets in the support portal are answered within two working days by the service desk team.\n"
BACKUPS_A = "# Alpha\n\nAlpha backups run nightly at 02:00 on the storage cluster.\n"
BACKUPS_B = "# Beta\n\nBeta backups run weekly on Sunday on the storage cluster.\n"
QUESTION = "What is the maximum attachment size in the support portal?"
REWORDED = "In the support portal, what is the maximum attachment size?"
NEAR_MISS = "What is the maximum attachment size in the team chat?"
CORRECTION = "The support portal accepts attachments of up to 25 MB each since March, whatever their file format."
SCHEMAS = Path(__file__).resolve().parents[2] / "app" / "schemas"


def _ready(client: TestClient, collection: str = "kb", **documents: str) -> None:
    for name, text in (documents or {"portal.md": PORTAL, "tickets.md": TICKETS}).items():
        job = upload(client, collection, name, text.encode()).json()["job_id"]
        assert wait_for_job(client, job)["status"] == "done"


def _ask(client: TestClient, question: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/ask", json={"collection": "kb", "question": question, "debug": True, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _give(client: TestClient, query_id: str, rating: str = "down", **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/feedback", json={"query_id": query_id, "rating": rating, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _correction_kinds(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in answer["debug"]["evidence"] if e["kind"] == "correction"]


def test_a_correction_answers_the_question_and_rewordings_once_approved_until_withdrawn(
    client: TestClient,
) -> None:
    _ready(client)
    wrong = _ask(client, QUESTION)
    assert "10 MB" in wrong["answer"] and wrong["from_correction"] is None

    given = _give(client, wrong["query_id"], correction=f"  {CORRECTION} ", comment="changed in March")
    assert given["status"] == "pending" and given["correction"] == CORRECTION
    assert given["collection"] == "kb" and given["question"] == QUESTION and given["rating"] == "down"
    # Not approved yet: the correction is not used (the down vote already moves the passage it rated).
    pending = _ask(client, QUESTION)
    assert pending["from_correction"] is None and _correction_kinds(pending) == []
    assert "25 MB" not in pending["answer"]

    approved = client.post(f"/v1/feedback/{given['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert approved.json()["approved_at"] is not None

    # The same question: the correction is the answer, the model is not asked.
    same = _ask(client, QUESTION.upper().rstrip("?") + " ?")
    assert same["from_correction"] == given["id"] and same["grounded"] is True
    assert "25 MB" in same["answer"] and same["usage"]["completion_tokens"] == 0
    (citation,) = same["citations"]
    assert citation["kind"] == "correction" and citation["feedback_id"] == given["id"]
    assert CORRECTION[citation["start"] : citation["end"]] == citation["quote"]

    # A rewording: the correction is the first evidence, and the answer cites it.
    reworded = _ask(client, REWORDED)
    assert reworded["from_correction"] is None and reworded["grounded"] is True
    assert "25 MB" in reworded["answer"]
    assert [c["kind"] for c in reworded["citations"]] == ["correction"]
    assert reworded["citations"][0]["feedback_id"] == given["id"]
    assert _correction_kinds(reworded)[0]["rank"] == 1

    # A neighbouring question does not get it.
    assert _correction_kinds(_ask(client, NEAR_MISS)) == []

    # Streamed, the direct answer arrives as one delta and a done event.
    streamed = client.post("/v1/ask", json={"collection": "kb", "question": QUESTION, "stream": True})
    assert "25 MB" in streamed.text and f'"from_correction": {given["id"]}' in streamed.text

    withdrawn = client.delete(f"/v1/feedback/{given['id']}")
    assert withdrawn.status_code == 204
    assert client.delete(f"/v1/feedback/{given['id']}").status_code == 204  # again: nothing changes
    for question in (QUESTION, REWORDED):
        after = _ask(client, question)
        assert "10 MB" in after["answer"] and after["from_correction"] is None
        assert _correction_kinds(after) == []
    shown = client.get(f"/v1/feedback/{given['id']}").json()
    assert shown["status"] == "withdrawn" and shown["withdrawn_at"] is not None
    assert_envelope(client.post(f"/v1/feedback/{given['id']}/approve"), 409, "conflict")


def test_a_withdrawal_in_one_process_stops_the_correction_in_another(settings: Settings) -> None:
    """Two API processes on one database: each reads the collection's feedback version per question."""
    first = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    second = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    try:
        with TestClient(create_app(components=first)) as one, TestClient(create_app(components=second)) as two:
            _ready(one)
            given = _give(one, _ask(one, QUESTION)["query_id"], correction=CORRECTION)
            one.post(f"/v1/feedback/{given['id']}/approve")
            assert _ask(two, REWORDED)["citations"][0]["kind"] == "correction"
            assert one.delete(f"/v1/feedback/{given['id']}").status_code == 204
            assert _correction_kinds(_ask(two, REWORDED)) == []
    finally:
        for built in (first, second):
            built.worker.stop()
            built.close_database()


def test_feedback_errors_and_review(client: TestClient, services: Components) -> None:
    _ready(client)
    assert_envelope(client.post("/v1/feedback", json={"query_id": "nope", "rating": "up"}), 404, "not_found")
    assert_envelope(client.post("/v1/feedback", json={"query_id": "x", "rating": "meh"}), 422)
    answer = _ask(client, QUESTION)
    assert_envelope(
        client.post("/v1/feedback", json={"query_id": answer["query_id"], "rating": "up", "correction": "  "}),
        400,
        "invalid_input",
    )
    rating = _give(client, answer["query_id"], rating="up")
    assert rating["status"] == "rating" and rating["correction"] is None
    assert_envelope(client.post(f"/v1/feedback/{rating['id']}/approve"), 409, "conflict")
    assert_envelope(client.post("/v1/feedback/999999/approve"), 404, "not_found")
    assert_envelope(client.delete("/v1/feedback/999999"), 404, "not_found")
    assert_envelope(client.get("/v1/feedback/0"), 422)

    correction = _give(client, answer["query_id"], correction=CORRECTION)
    listed = client.get("/v1/feedback").json()["data"]
    assert [f["id"] for f in listed] == [rating["id"], correction["id"]]
    assert [f["id"] for f in client.get("/v1/feedback?rating=down").json()["data"]] == [correction["id"]]
    assert [f["id"] for f in client.get("/v1/feedback?status=pending").json()["data"]] == [correction["id"]]
    assert client.get("/v1/feedback?collection=kb").json()["data"] == listed
    page = client.get("/v1/feedback", params={"limit": 1}).json()["data"]
    following = client.get("/v1/feedback", params={"limit": 1, "after": page[0]["id"]}).json()["data"]
    assert [f["id"] for f in page + following] == [rating["id"], correction["id"]]
    assert_envelope(client.get("/v1/feedback?collection=other"), 404, "not_found")
    future = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert client.get("/v1/feedback", params={"since": future}).json()["data"] == []
    assert_envelope(client.get("/v1/feedback?since=yesterday"), 422)


def test_the_chat_completion_id_names_the_answer(client: TestClient) -> None:
    _ready(client)
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "collection": "kb", "messages": [{"role": "user", "content": QUESTION}]},
    ).json()
    given = _give(client, chat["id"], rating="down", correction=CORRECTION)
    assert given["query_id"] == chat["id"].removeprefix("chatcmpl-")
    client.post(f"/v1/feedback/{given['id']}/approve")
    again = client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "collection": "kb", "messages": [{"role": "user", "content": QUESTION}]},
    ).json()
    assert again["from_correction"] == given["id"] and "25 MB" in again["choices"][0]["message"]["content"]


def test_feedback_is_the_tenants_own(client: TestClient, services: Components) -> None:
    _ready(client)
    answer = _ask(client, QUESTION)
    mine = _give(client, answer["query_id"], correction=CORRECTION)
    with services.session_factory() as session:
        other = db_documents.get_or_create_tenant(session, name="other").id
        session.commit()
    with pytest.raises(NotFoundError):
        feedback.submit_feedback(services, tenant_id=other, query_id=answer["query_id"], rating="up")
    with pytest.raises(NotFoundError):
        feedback.approve_feedback(services, tenant_id=other, feedback_id=mine["id"])
    with pytest.raises(NotFoundError):
        feedback.withdraw_feedback(services, tenant_id=other, feedback_id=mine["id"])
    assert feedback.list_feedback(services, tenant_id=other) == []
    assert list(feedback.export_feedback(services, tenant_id=other, export_format="sft")) == []
    assert client.get(f"/v1/feedback/{mine['id']}").json()["status"] == "pending"


def test_auto_approval_uses_a_correction_at_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url, feedback={"auto_approve": True})
    built = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    try:
        with TestClient(create_app(components=built)) as client:
            _ready(client)
            given = _give(client, _ask(client, QUESTION)["query_id"], correction=CORRECTION)
            assert given["status"] == "approved"
            assert _ask(client, QUESTION)["from_correction"] == given["id"]
    finally:
        built.worker.stop()
        built.close_database()


def _order(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.post("/v1/retrieve", json={"collection": "kb", "query": query, "top_k": 5})
    chunks: list[dict[str, Any]] = response.json()["chunks"]
    return chunks


def test_ratings_move_passages_within_bounds_and_can_be_turned_off(client: TestClient, services: Components) -> None:
    _ready(client, **{"alpha.md": BACKUPS_A, "beta.md": BACKUPS_B})
    query = "When do backups run on the storage cluster?"
    before = _order(client, query)
    assert len(before) == 2 and all(c["prior"] == 0 and c["rank_shift"] == 0 for c in before)
    answer = _ask(client, query)
    cited = answer["citations"][0]["chunk_id"]
    vote = _give(client, answer["query_id"], rating="down")

    # The same question: the passage its answer cited moves down one place.
    after = _order(client, query)
    moved = next(c for c in after if c["chunk_id"] == cited)
    assert moved["prior"] == pytest.approx(-1.0, abs=0.01) and moved["rank_shift"] == -1
    assert after[-1]["chunk_id"] == cited
    # The answer's debug output shows the same.
    shown = [e for e in _ask(client, query)["debug"]["evidence"] if e.get("rank_shift")]
    assert shown and shown[0]["chunk_id"] == cited and shown[0]["rank_shift"] == -1

    # A question unlike the one voted on is not moved.
    unrelated = _order(client, "Alpha nightly 02:00")
    assert all(c["prior"] == 0 and c["rank_shift"] == 0 for c in unrelated)

    # Many votes move a passage by at most feedback.max_rank_shift (3) places.
    client.delete(f"/v1/feedback/{vote['id']}")
    assert all(c["rank_shift"] == 0 for c in _order(client, query))
    for _ in range(20):
        _give(client, answer["query_id"], rating="down")
    with_downs = _order(client, query)
    assert with_downs[-1]["chunk_id"] == cited and with_downs[-1]["rank_shift"] == -3
    assert with_downs[-1]["prior"] == pytest.approx(-20.0, abs=0.1)


def test_ranking_from_ratings_off(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url, feedback={"ranking": False})
    built = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    try:
        with TestClient(create_app(components=built)) as client:
            _ready(client, **{"alpha.md": BACKUPS_A, "beta.md": BACKUPS_B})
            query = "When do backups run on the storage cluster?"
            before = _order(client, query)
            for _ in range(3):
                _give(client, _ask(client, query)["query_id"], rating="down")
            after = _order(client, query)
            assert [c["chunk_id"] for c in after] == [c["chunk_id"] for c in before]
            assert all(c["rank_shift"] == 0 for c in after)
    finally:
        built.worker.stop()
        built.close_database()


def _jsonl(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in response.text.splitlines()]


def test_exports_hold_what_was_sent_and_the_corrected_or_approved_answer(client: TestClient) -> None:
    _ready(client)
    wrong = _ask(client, QUESTION)
    corrected = _give(client, wrong["query_id"], correction=CORRECTION)
    good = _ask(client, "How fast are tickets answered in the support portal?")
    assert good["grounded"]
    _give(client, good["query_id"], rating="up")
    _give(client, _ask(client, "How fast are tickets answered?")["query_id"], rating="down")  # not exported

    # Pending corrections are not training data.
    assert _jsonl(client.get("/v1/feedback/export?format=dpo")) == []
    client.post(f"/v1/feedback/{corrected['id']}/approve")
    sft = _jsonl(client.get("/v1/feedback/export?format=sft"))
    dpo = _jsonl(client.get("/v1/feedback/export", params={"format": "dpo", "collection": "kb"}))
    sft_schema = json.loads((SCHEMAS / "export_sft.schema.json").read_text())
    dpo_schema = json.loads((SCHEMAS / "export_dpo.schema.json").read_text())
    for line in sft:
        jsonschema.validate(line, sft_schema)
    for line in dpo:
        jsonschema.validate(line, dpo_schema)
    assert len(sft) == 2 and len(dpo) == 1
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": CORRECTION}
    assert sft[0]["messages"][0]["role"] == "system" and QUESTION in sft[0]["messages"][-2]["content"]
    assert "10 MB" in sft[0]["messages"][-2]["content"]  # the evidence as it was sent
    assert "two working days" in sft[1]["messages"][-1]["content"] and "[1]" in sft[1]["messages"][-1]["content"]
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": CORRECTION}]
    assert "10 MB" in dpo[0]["rejected"][0]["content"]
    assert dpo[0]["prompt"] == sft[0]["messages"][:-1]

    client.delete(f"/v1/feedback/{corrected['id']}")
    assert len(_jsonl(client.get("/v1/feedback/export?format=sft"))) == 1
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert _jsonl(client.get("/v1/feedback/export", params={"format": "sft", "since": future})) == []
    assert_envelope(client.get("/v1/feedback/export?format=csv"), 422)
    assert_envelope(client.get("/v1/feedback/export?format=sft&collection=other"), 404, "not_found")


def test_answers_with_feedback_outlive_retention(client: TestClient, services: Components) -> None:
    _ready(client)
    rated = _ask(client, QUESTION)["query_id"]
    unrated = _ask(client, "How fast are tickets answered?")["query_id"]
    vote = _give(client, rated, rating="up")
    services.answer_log.flush()
    with services.session_factory() as session:
        for row in session.query(AnswerRecord):
            row.created_at = utcnow() - timedelta(days=365)
        session.commit()
    assert services.answer_log.prune() == 1
    assert client.get(f"/v1/queries/{rated}").status_code == 200
    assert client.get(f"/v1/queries/{unrated}").status_code == 404
    client.delete(f"/v1/feedback/{vote['id']}")
    assert services.answer_log.prune() == 1
