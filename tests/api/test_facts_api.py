"""Facts over HTTP with a frozen clock: the request's time zone, facts and the check in /v1/ask, in the
OpenAI-compatible endpoint's extra fields (streamed too) and in the answer record; an unknown zone is a 422
naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from app.components import Components
from app.rag.facts.clock import FixedClock
from app.rag.facts.layer import FactLayer
from tests.api.test_ask_api import DOCUMENT
from tests.api.test_documents_api import wait_for_job

# 2026-12-01 20:30 UTC: already Wednesday the 2nd in Shanghai, still Tuesday the 1st in New York.
NOW = datetime(2026, 12, 1, 20, 30, tzinfo=UTC)


@pytest.fixture
def kb(client: TestClient, services: Components) -> Iterator[TestClient]:
    services.facts = FactLayer(clock=FixedClock(NOW))
    job = client.post("/v1/collections/kb/documents", files={"file": ("perm.md", DOCUMENT.encode())})
    assert wait_for_job(client, job.json()["job_id"])["status"] == "done"
    yield client


def test_ask_reads_dates_in_the_requested_zone(kb: TestClient) -> None:
    shanghai = kb.post("/v1/ask", json={"collection": "kb", "question": "今天是几号？", "tz": "Asia/Shanghai"}).json()
    assert shanghai["facts"] == [
        {"name": "今天的日期（Asia/Shanghai）", "value": "2026年12月2日", "source": "clock"}
    ]
    assert shanghai["timezone"] == "Asia/Shanghai"
    new_york = kb.post(
        "/v1/ask", json={"collection": "kb", "question": "What is today's date?", "tz": "America/New_York"}
    ).json()
    assert new_york["facts"][0]["value"] == "December 1, 2026"
    # No tz: the server's default.
    default = kb.post("/v1/ask", json={"collection": "kb", "question": "今天是几号？"}).json()
    assert default["timezone"] == "Asia/Shanghai" and default["facts"] == shanghai["facts"]
    record = kb.get(f"/v1/queries/{new_york['query_id']}").json()
    assert record["facts"] == new_york["facts"] and record["timezone"] == "America/New_York"
    assert record["fact_check"]["verdict"] == new_york["fact_check"]["verdict"]


def test_an_unknown_time_zone_is_a_422_naming_it(kb: TestClient) -> None:
    for path, body in [
        ("/v1/ask", {"collection": "kb", "question": "今天是几号？", "tz": "Mars/Olympus_Mons"}),
        (
            "/v1/chat/completions",
            {
                "model": "fake-model",
                "collection": "kb",
                "tz": "Mars/Olympus_Mons",
                "messages": [{"role": "user", "content": "今天是几号？"}],
            },
        ),
    ]:
        response = kb.post(path, json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert "Mars/Olympus_Mons" in error["message"] and "tz" in str(error.get("param"))


def test_chat_completions_carry_facts_streamed_or_not(kb: TestClient) -> None:
    body = {
        "model": "fake-model",
        "collection": "kb",
        "tz": "America/New_York",
        "messages": [{"role": "user", "content": "What is 1,200 * 1.08?"}],
    }
    completion = kb.post("/v1/chat/completions", json=body).json()
    assert completion["facts"] == [{"name": "the result of 1200 * 1.08", "value": "1296", "source": "calculator"}]
    assert completion["fact_check"]["verdict"] in ("none", "consistent", "corrected", "flagged")
    with kb.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    last = json.loads(lines[-1][len("data: ") :])
    assert last["facts"] == completion["facts"] and "fact_check" in last


def test_a_question_that_needs_no_fact_gets_none(kb: TestClient) -> None:
    body = kb.post("/v1/ask", json={"collection": "kb", "question": "给目录设置粘滞位有什么作用？"}).json()
    assert body["facts"] == [] and body["fact_check"] == {"verdict": "none", "issues": [], "notes": []}
    assert body["grounded"]
