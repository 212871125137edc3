"""The corrections memory end to end, with the bundled model and the default embedder: a question the documents
cannot answer is refused; a correction is posted and approved; the same question is answered with the
correction itself, a rewording of it by the model citing the correction; once withdrawn, neither is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

DOCUMENTS = {
    "policy.md": (
        "# 报销制度\n\n差旅报销需在出差结束后 30 天内提交。住宿标准为一线城市每晚 600 元。\n\n"
        "# IT 支持\n\nVPN 账号由 IT 服务台开通，开通后有效期为一年。\n"
    ),
    "portal.md": (
        "# Support portal\n\nThe support portal accepts attachments of up to 10 MB each. "
        "Tickets are answered within two working days.\n"
    ),
}

CASES = [
    pytest.param(
        "Who is the on-call contact for the payments service?",
        "The on-call contact for the payments service is Lina Park, reachable at extension 4471.",
        "payments service on-call contact?",
        "4471",
        id="en-unanswerable",
    ),
    pytest.param(
        "VPN 账号的有效期是多久？",
        "VPN 账号开通后有效期为两年，到期前一周会收到邮件提醒。",
        "VPN 账号开通以后能用多长时间？",
        "两年",
        id="zh-outdated",
    ),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        worker={"poll_seconds": 0.05},
        llm={"local_model_dir": bundled_model_dir, "max_tokens": 96},
    )
    services = build_components(settings)
    with TestClient(create_app(components=services)) as test_client:
        for name, text in DOCUMENTS.items():
            job = test_client.post("/v1/collections/kb/documents", files={"file": (name, text.encode())}).json()
            deadline = time.monotonic() + 120
            while test_client.get(f"/v1/jobs/{job['job_id']}").json()["status"] not in ("done", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        yield test_client
    services.engine.dispose()


def ask(client: TestClient, question: str) -> dict[str, Any]:
    response = client.post("/v1/ask", json={"collection": "kb", "question": question, "debug": True})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("question", "correction", "reworded", "fact"), CASES)
def test_a_correction_answers_until_withdrawn(
    client: TestClient, question: str, correction: str, reworded: str, fact: str
) -> None:
    first = ask(client, question)
    assert not first["grounded"] and fact not in first["answer"]

    posted = client.post(
        "/v1/feedback", json={"query_id": first["query_id"], "rating": "down", "correction": correction}
    ).json()
    assert client.post(f"/v1/feedback/{posted['id']}/approve").json()["status"] == "approved"

    same = ask(client, question)
    assert same["grounded"] and same["from_correction"] == posted["id"] and fact in same["answer"]
    assert [(c["kind"], c["feedback_id"]) for c in same["citations"]] == [("correction", posted["id"])]

    again = ask(client, reworded)
    assert again["grounded"], again["debug"]
    assert again["from_correction"] is None and fact in again["answer"]
    assert ("correction", posted["id"]) in [(c["kind"], c["feedback_id"]) for c in again["citations"]]

    assert client.delete(f"/v1/feedback/{posted['id']}").status_code == 204
    for asked in (question, reworded):
        after = ask(client, asked)
        assert fact not in after["answer"] and after["from_correction"] is None
        assert all(c["kind"] != "correction" for c in after["citations"])
        assert all(e["kind"] != "correction" for e in after["debug"]["evidence"])
