"""The OpenAI-compatible endpoint, driven by the official openai client over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.test_ask_api import DOCUMENT
from tests.api.test_documents_api import wait_for_job


@pytest.fixture
def client(live_url: str) -> openai.OpenAI:
    with httpx.Client(base_url=live_url) as http:
        job = http.post("/v1/collections/kb/documents", files={"file": ("perm.md", DOCUMENT.encode())})
        assert wait_for_job(http, job.json()["job_id"])["status"] == "done"
    return openai.OpenAI(base_url=f"{live_url}/v1", api_key="unused", max_retries=0)


def test_non_streaming_answer_with_citations(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "system", "content": "ignored: prompts are files"},
            {"role": "user", "content": "给目录设置粘滞位有什么作用？"},
        ],
        extra_body={"collection": "kb"},
    )
    message = completion.choices[0].message
    assert completion.object == "chat.completion" and completion.model == "fake-model"
    assert "粘滞位" in (message.content or "")
    extra = message.model_extra or {}
    assert extra["grounded"] is True
    citation = extra["citations"][0]
    assert DOCUMENT[citation["start"] : citation["end"]] == citation["quote"]
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streaming_ends_with_citations_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "给目录设置粘滞位有什么作用？"}],
        stream=True,
        extra_body={"collection": "kb"},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    final = chunks[-1]
    assert "粘滞位" in text
    assert final.choices[0].finish_reason == "stop"
    extra = final.model_extra or {}
    assert extra["grounded"] is True and extra["citations"]
    assert final.usage is not None and final.usage.total_tokens > 0


def test_errors_reach_the_client_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "q"}], extra_body={"collection": "nope"}
        )
    assert missing.value.body["message"].startswith("collection")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "assistant", "content": "no question"}],
            extra_body={"collection": "kb"},
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "q"}])


def test_chat_limits_are_bad_input_not_server_errors(live_url: str) -> None:
    with httpx.Client(base_url=live_url) as http:
        long_question = {
            "model": "fake-model",
            "collection": "kb",
            "messages": [{"role": "user", "content": "长" * 5000}],
        }
        response = http.post("/v1/chat/completions", json=long_question)
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
        turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(61)]
        response = http.post(
            "/v1/chat/completions", json={"model": "fake-model", "collection": "kb", "messages": turns}
        )
        assert response.status_code == 400
        assert http.get("/v1/documents/99999999999999999999").status_code == 422
        assert http.get("/v1/jobs/3000000000").status_code == 422
