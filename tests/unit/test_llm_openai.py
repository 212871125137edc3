"""The OpenAI-compatible backend against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from app.rag.errors import (
    NotFoundError,
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from app.rag.llm import GenerationParams, StreamDelta, StreamEnd
from app.rag.llm_openai import OpenAIChatModel
from app.rag.types import ChatMessage
from tests.upstream import ANSWER, UpstreamState, running_upstream

MESSAGES = [ChatMessage("system", "Answer."), ChatMessage("user", "How do I list branches?")]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, UpstreamState]]:
    with running_upstream() as running:
        yield running


def _model(url: str, **overrides: object) -> OpenAIChatModel:
    options: dict[str, object] = {
        "base_url": url,
        "default_model": "ok",
        "timeout_seconds": 0.5,
        "max_retries": 0,
    }
    options.update(overrides)
    return OpenAIChatModel(**options)  # type: ignore[arg-type]


def test_completion_usage_window_and_token_count(upstream: tuple[str, UpstreamState]) -> None:
    url, _ = upstream

    async def run() -> None:
        llm = _model(url)
        completion = await llm.complete(MESSAGES, model="ok", params=GenerationParams())
        assert completion.text == ANSWER and completion.usage.total_tokens == 51
        assert await llm.context_window("ok") == 2048
        assert await llm.count_tokens(MESSAGES, "ok") == sum(len(m.content) for m in MESSAGES) // 3 + 5
        await llm.aclose()

    asyncio.run(run())


def test_a_model_the_server_does_not_serve_is_not_mistaken_for_a_missing_tokenizer(
    upstream: tuple[str, UpstreamState],
) -> None:
    url, _ = upstream

    async def run() -> None:
        llm = _model(url)
        with pytest.raises(NotFoundError):
            await llm.count_tokens(MESSAGES, "missing")
        # Counting still uses the server's tokenizer afterwards, not the character estimate.
        assert await llm.count_tokens(MESSAGES, "ok") == sum(len(m.content) for m in MESSAGES) // 3 + 5
        await llm.aclose()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("slow", UpstreamTimeoutError),
        ("down", UpstreamUnavailableError),
        ("garbage", UpstreamBadResponseError),
    ],
)
def test_upstream_failures_become_typed_errors(
    upstream: tuple[str, UpstreamState], model: str, error: type
) -> None:
    url, _ = upstream
    with pytest.raises(error):
        asyncio.run(_model(url).complete(MESSAGES, model=model, params=GenerationParams()))


def test_unreachable_server_is_unavailable() -> None:
    llm = _model("http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamUnavailableError):
        asyncio.run(llm.complete(MESSAGES, model="ok", params=GenerationParams()))


def test_stream_yields_deltas_then_usage(upstream: tuple[str, UpstreamState]) -> None:
    url, _ = upstream

    async def run() -> list[object]:
        return [event async for event in _model(url).stream(MESSAGES, model="ok", params=GenerationParams())]

    events = asyncio.run(run())
    assert all(isinstance(e, StreamDelta) for e in events[:-1]) and isinstance(events[-1], StreamEnd)
    assert "".join(e.text for e in events[:-1] if isinstance(e, StreamDelta)).strip() == ANSWER
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.usage.total_tokens == 51


def test_stop_strings_are_sent_to_the_server(upstream: tuple[str, UpstreamState]) -> None:
    url, state = upstream
    params = GenerationParams(stop=("Question:",))
    asyncio.run(_model(url).complete(MESSAGES, model="ok", params=params))
    assert state.requests[-1]["stop"] == ["Question:"]
    asyncio.run(_model(url).complete(MESSAGES, model="ok", params=GenerationParams()))
    assert "stop" not in state.requests[-1]


def test_closing_a_stream_early_closes_the_upstream_request(upstream: tuple[str, UpstreamState]) -> None:
    url, state = upstream
    before = state.streams_closed_early

    async def run() -> None:
        stream = _model(url, timeout_seconds=10).stream(MESSAGES, model="long", params=GenerationParams())
        async for _event in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)

    asyncio.run(run())
    assert state.streams_closed_early == before + 1


def test_readiness_check_names_what_is_wrong_with_the_model_server(upstream: tuple[str, UpstreamState]) -> None:
    url, _ = upstream
    assert asyncio.run(_model(url).check()) is None
    not_served = asyncio.run(_model(url, default_model="qwen-7b").check())
    assert not_served is not None and "does not serve qwen-7b" in not_served and "ok" in not_served
    unreachable = asyncio.run(_model("http://127.0.0.1:9/v1").check())
    assert unreachable is not None and "cannot be reached" in unreachable and "127.0.0.1:9" in unreachable
