"""/v1/ask end to end on fakes: grounded answers with exact quotes, refusals, SSE, templates, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from app.components import Components, build_components
from app.config import Settings
from app.main import create_app
from app.rag.llm_openai import OpenAIChatModel
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.fakes import FakeChatModel, FakeEmbedder
from tests.upstream import running_upstream

DOCUMENT = (
    "# 文件权限\n\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的用户删除。/tmp 目录通常设置了粘滞位。\n\n"
    "# 网络\n\n网络接口的配置文件位于 /etc/network/interfaces 文件中。\n"
)


def _ready(client: TestClient) -> None:
    job = upload(client, "kb", "perm.md", DOCUMENT.encode()).json()["job_id"]
    assert wait_for_job(client, job)["status"] == "done"


def _sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_grounded_answer_cites_an_exact_span(client: TestClient) -> None:
    _ready(client)
    response = client.post("/v1/ask", json={"collection": "kb", "question": "给目录设置粘滞位有什么作用？"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grounded"] is True and body["query_id"]
    citation = body["citations"][0]
    assert citation["source"] == "perm.md"
    assert DOCUMENT[citation["start"] : citation["end"]] == citation["quote"]
    assert "粘滞位" in citation["quote"] and body["answer"].endswith("[1]。")
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        > 0
    )
    assert body["model"] == "fake-model"
    assert {"retrieve", "pack", "generate", "verify"} <= set(body["timings"])
    assert body["sentences"] == [{"text": body["sentences"][0]["text"], "supported": True, "citations": [0]}]


def test_refuses_in_the_questions_language_when_nothing_supports_an_answer(client: TestClient) -> None:
    _ready(client)
    zh = client.post("/v1/ask", json={"collection": "kb", "question": "如何安装打印机？"}).json()
    assert (
        zh["grounded"] is False and zh["answer"] == "文档中没有找到这个问题的答案。" and zh["citations"] == []
    )
    en = client.post(
        "/v1/ask", json={"collection": "kb", "question": "How do I configure a printer driver?"}
    ).json()
    assert en["grounded"] is False
    assert en["answer"] == "The documents do not contain the answer to this question."


def test_streaming_sends_deltas_then_one_done_event(client: TestClient) -> None:
    _ready(client)
    response = client.post(
        "/v1/ask", json={"collection": "kb", "question": "给目录设置粘滞位有什么作用？", "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"} and len(names) > 2
    streamed = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["grounded"] is True and done["citations"] and done["query_id"]
    assert "粘滞位" in streamed


def test_debug_returns_the_rendered_messages(client: TestClient) -> None:
    _ready(client)
    body = client.post(
        "/v1/ask", json={"collection": "kb", "question": "粘滞位有什么作用？", "debug": True}
    ).json()
    messages = body["debug"]["messages"]
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    assert messages[-1]["role"] == "user" and "粘滞位" in messages[-1]["content"]
    assert body["passages_used"] >= 1
    plain = client.post("/v1/ask", json={"collection": "kb", "question": "粘滞位有什么作用？"}).json()
    assert plain["debug"] is None


def test_follow_up_questions_are_rewritten_before_retrieval(client: TestClient, services: Components) -> None:
    _ready(client)
    history = [
        {"role": "user", "content": "粘滞位是什么？"},
        {"role": "assistant", "content": "粘滞位保护目录中的文件 [1]。"},
    ]
    client.post("/v1/ask", json={"collection": "kb", "question": "它通常设在哪个目录？", "history": history})
    llm = services.llm
    assert isinstance(llm, FakeChatModel)
    rewrite_call, answer_call = llm.calls[-2], llm.calls[-1]
    assert "粘滞位是什么" in rewrite_call[-1].content and "追问" in rewrite_call[-1].content
    # The history is part of the answering conversation too, between the instructions and the question.
    assert [m.role for m in answer_call][:1] == ["system"] and any(
        m.content == "粘滞位是什么？" for m in answer_call
    )


def test_templates_and_errors(client: TestClient) -> None:
    _ready(client)
    names = [t["name"] for t in client.get("/v1/templates").json()["templates"]]
    assert names == ["extract", "qa", "summarize"]
    summary = client.post(
        "/v1/ask", json={"collection": "kb", "question": "粘滞位的作用", "template": "summarize"}
    )
    assert summary.status_code == 200
    assert_envelope(
        client.post("/v1/ask", json={"collection": "kb", "question": "q", "template": "nope"}), 404
    )
    assert_envelope(client.post("/v1/ask", json={"collection": "nope", "question": "q"}), 404, "not_found")
    assert_envelope(client.post("/v1/ask", json={"collection": "kb", "question": ""}), 422)
    assert_envelope(client.post("/v1/ask", json={"collection": "kb", "question": "q", "temperature": 5}), 422)
    assert_envelope(
        client.post(
            "/v1/ask",
            json={"collection": "kb", "question": "q", "history": [{"role": "system", "content": "x"}]},
        ),
        422,
    )


def test_upstream_failures_reach_the_client_as_502_503_504(settings: Settings) -> None:
    """The base model's server failing; the upstream's behaviour follows the served model's name."""
    ask = {"collection": "kb", "question": "给目录设置粘滞位有什么作用？"}
    with running_upstream() as (url, _state):

        @contextmanager
        def serving(base_model: str) -> Iterator[TestClient]:
            llm = OpenAIChatModel(base_url=url, default_model=base_model, timeout_seconds=0.5, max_retries=0)
            services = build_components(settings, embedder=FakeEmbedder(), llm=llm)
            with TestClient(create_app(components=services)) as client:
                _ready(client)
                yield client
            services.engine.dispose()

        with serving("ok") as client:
            assert client.post("/v1/ask", json=ask).json()["model"] == "ok"
            # Streaming: a failure before generation keeps its status.
            assert_envelope(client.post("/v1/ask", json={**ask, "collection": "nope", "stream": True}), 404)
        with serving("slow") as client:
            assert_envelope(client.post("/v1/ask", json=ask), 504, "upstream_timeout")
        with serving("down") as client:
            assert_envelope(client.post("/v1/ask", json=ask), 503, "upstream_unavailable")
            # One during generation is the stream's error event.
            streamed = client.post("/v1/ask", json={**ask, "stream": True})
            assert streamed.status_code == 200
            name, data = _sse(streamed.text)[-1]
            assert name == "error" and data["error"]["code"] == "upstream_unavailable"
        with serving("garbage") as client:
            error = assert_envelope(client.post("/v1/ask", json=ask), 502)
            assert "proxy error" not in error["message"]
