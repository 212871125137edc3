"""The routing module on its own: the order of choice, routing by domain, each fallback cause and the
circuit breaker, with a fake embedder and a fake chat model whose adapters fail on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest

from app.rag.adapters import AUTO, AdapterSpec
from app.rag.embedding import Vectors
from app.rag.errors import NotFoundError, UpstreamUnavailableError
from app.rag.llm import Completion, GenerationParams, StreamDelta, StreamEnd, StreamEvent, Usage
from app.rag.routing import BreakerState, FallbackCause, ModelRouter, Route, RouteReason, RoutingPolicy
from app.rag.types import ChatMessage
from tests.fakes import FakeChatModel, FakeEmbedder

MESSAGES = [ChatMessage("user", "How do I list branches?")]
PARAMS = GenerationParams(max_tokens=16)


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.query_texts: list[str] = []

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        self.query_texts.extend(texts)
        return super().embed_queries(texts)


class FailingChatModel(FakeChatModel):
    """Each adapter in ``behaviour`` fails its way: ``error`` (503), ``slow``, ``empty``, ``unsure``."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        super().__init__()
        self.behaviour = behaviour

    async def complete(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> Completion:
        self.models_called.append(model)
        how = self.behaviour.get(model, "ok")
        if how == "error":
            raise UpstreamUnavailableError("the model server is overloaded or unavailable (503)")
        if how == "slow":
            await asyncio.sleep(5)
        text = "" if how == "empty" else f"answer by {model}"
        logprobs = (-3.0, -2.5) if how == "unsure" else (-0.1, -0.2)
        return Completion(text, Usage(5, 3), "stop", model, logprobs if params.logprobs else None)

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        completion = await self.complete(messages, model=model, params=params)
        if completion.text:
            yield StreamDelta(completion.text)
        yield StreamEnd(usage=completion.usage, finish_reason="stop", model=model)


def adapter(name: str, description: str = "", examples: Sequence[str] = ()) -> AdapterSpec:
    return AdapterSpec(name, f"/adapters/{name}", "fake-model", 4, ("q_proj",), description, tuple(examples))


GIT = adapter("git", "Git version control: branches, commits, merges", ["How do I delete a git branch?"])


def router(
    llm: FakeChatModel,
    adapters: Sequence[AdapterSpec] = (GIT,),
    embedder: FakeEmbedder | None = None,
    **policy: object,
) -> ModelRouter:
    return ModelRouter(
        llm=llm,
        adapters=lambda: tuple(adapters),
        embedder=embedder or FakeEmbedder(),
        policy=RoutingPolicy(**policy),  # type: ignore[arg-type]
    )


def choose(r: ModelRouter, question: str, requested: str | None = None, default: str | None = None) -> Route:
    return asyncio.run(r.choose(requested=requested, collection_default=default, question=question))


async def _finish(completion: Completion, route: Route) -> tuple[str, Route]:
    return completion.text, route


def complete(r: ModelRouter, route: Route, unsupported: bool = False) -> tuple[str, Route]:
    return asyncio.run(r.complete(route, MESSAGES, PARAMS, _finish, lambda _result: unsupported))


def test_the_request_then_the_collection_then_routing() -> None:
    r = router(FakeChatModel())
    assert choose(r, "anything", requested="git") == Route("git", RouteReason.REQUEST)
    assert choose(r, "anything", requested="fake-model") == Route("fake-model", RouteReason.REQUEST)
    assert choose(r, "anything", default="git") == Route("git", RouteReason.COLLECTION)
    # "auto" overrides the collection's default; a default no longer served is ignored.
    assert choose(r, "what is the weather", requested=AUTO, default="git").reason is RouteReason.AUTO
    assert choose(r, "what is the weather", default="gone").reason is RouteReason.AUTO
    with pytest.raises(NotFoundError) as raised:
        choose(r, "anything", requested="nope")
    assert raised.value.param == "model"


def test_routing_by_domain_picks_the_closer_of_adapter_and_general_questions() -> None:
    r = router(FakeChatModel())
    in_domain = choose(r, "How do I delete a git branch after a merge?")
    assert (in_domain.model, in_domain.reason) == ("git", RouteReason.AUTO)
    assert in_domain.score is not None and in_domain.score >= 0
    # A higher margin sends the same question to the base model, with the lead still reported.
    strict = choose(router(FakeChatModel(), margin=0.99), "How do I delete a git branch after a merge?")
    assert (strict.model, strict.score) == ("fake-model", in_domain.score)


def test_adapters_with_no_domain_cost_no_embedding() -> None:
    embedder = CountingEmbedder()
    r = router(FakeChatModel(), adapters=[adapter("bare")], embedder=embedder)
    assert choose(r, "How do I delete a git branch?") == Route("fake-model", RouteReason.AUTO)
    assert embedder.query_texts == []


@pytest.mark.parametrize(
    ("behaviour", "cause"),
    [
        ("error", FallbackCause.UPSTREAM_ERROR),
        ("slow", FallbackCause.TIMEOUT),
        ("empty", FallbackCause.MALFORMED),
        ("unsure", FallbackCause.LOW_CONFIDENCE),
    ],
)
def test_each_failure_falls_back_to_the_base_model(behaviour: str, cause: FallbackCause) -> None:
    llm = FailingChatModel({"git": behaviour})
    r = router(llm, adapter_timeout_seconds=0.2)
    text, route = complete(r, Route("git", RouteReason.REQUEST))
    assert (text, route.model, route.reason, route.cause, route.adapter) == (
        "answer by fake-model",
        "fake-model",
        RouteReason.FALLBACK,
        cause,
        "git",
    )
    assert llm.models_called == ["git", "fake-model"]


def test_an_unsupported_answer_is_answered_again_unless_turned_off() -> None:
    text, route = complete(router(FailingChatModel({})), Route("git", RouteReason.REQUEST), unsupported=True)
    assert (text, route.cause) == ("answer by fake-model", FallbackCause.UNSUPPORTED)
    kept = router(FailingChatModel({}), fallback_on_unsupported=False)
    assert complete(kept, Route("git", RouteReason.REQUEST), unsupported=True)[0] == "answer by git"


def test_an_adapter_removed_after_the_choice_is_not_loaded() -> None:
    text, route = complete(router(FailingChatModel({}), adapters=()), Route("git", RouteReason.REQUEST))
    assert (text, route.cause) == ("answer by fake-model", FallbackCause.NOT_LOADED)


def test_the_breaker_opens_after_failures_in_a_row_and_probes_again_later() -> None:
    llm = FailingChatModel({"git": "error"})
    r = router(llm, breaker_failures=2, breaker_reset_seconds=0.3)
    asked = Route("git", RouteReason.REQUEST)

    async def scenario() -> list[FallbackCause | None]:
        causes = []
        for _ in range(3):
            causes.append((await r.complete(asked, MESSAGES, PARAMS, _finish, lambda _r: False))[1].cause)
        assert r.breaker_state("git") is BreakerState.OPEN
        await asyncio.sleep(0.35)
        llm.behaviour.clear()  # recovered: the probe succeeds and closes the breaker
        causes.append((await r.complete(asked, MESSAGES, PARAMS, _finish, lambda _r: False))[1].cause)
        return causes

    causes = asyncio.run(scenario())
    assert causes == [FallbackCause.UPSTREAM_ERROR, FallbackCause.UPSTREAM_ERROR, FallbackCause.BREAKER_OPEN, None]
    assert r.breaker_state("git") is BreakerState.CLOSED
    # The open breaker spared the adapter a call: two failures, then straight to the base, then the probe.
    assert llm.models_called == ["git", "fake-model", "git", "fake-model", "fake-model", "git"]


def test_a_stream_falls_back_before_its_first_token() -> None:
    async def read(r: ModelRouter) -> tuple[Route, str]:
        route: Route | None = None
        text = []
        async for event in r.stream(Route("git", RouteReason.REQUEST), MESSAGES, PARAMS):
            if isinstance(event, Route):
                route = event
            elif isinstance(event, StreamDelta):
                text.append(event.text)
        assert route is not None
        return route, "".join(text)

    route, text = asyncio.run(read(router(FailingChatModel({"git": "error"}))))
    assert (route.model, route.cause, text) == ("fake-model", FallbackCause.UPSTREAM_ERROR, "answer by fake-model")
    route, text = asyncio.run(read(router(FailingChatModel({"git": "empty"}))))
    assert (route.cause, text) == (FallbackCause.MALFORMED, "answer by fake-model")
    route, text = asyncio.run(read(router(FailingChatModel({}))))
    assert (route, text) == (Route("git", RouteReason.REQUEST), "answer by git")



def _compare(r: ModelRouter, scores: dict[str, float]) -> tuple[str, Route]:
    def score(result: tuple[str, Route]) -> float:
        return scores[result[0].removeprefix("answer by ")]

    def relabel(result: tuple[str, Route], route: Route) -> tuple[str, Route]:
        return result[0], route

    return asyncio.run(r.compare(Route("git", RouteReason.REQUEST), MESSAGES, PARAMS, _finish, score, relabel))


def test_compare_keeps_the_better_supported_answer_and_reports_both() -> None:
    llm = FailingChatModel({})
    text, route = _compare(router(llm), {"git": 1.0, "fake-model": 0.5})
    assert (text, route.model, route.reason) == ("answer by git", "git", RouteReason.REQUEST)
    assert route.as_dict()["compare"] == {"git": 1.0, "fake-model": 0.5}
    assert sorted(llm.models_called) == ["fake-model", "git"]  # both asked
    text, route = _compare(router(FailingChatModel({})), {"git": 0.4, "fake-model": 0.9})
    assert (text, route.reason, route.cause) == ("answer by fake-model", RouteReason.FALLBACK, FallbackCause.OUTSCORED)
    # A tie keeps the adapter: it was chosen for the question's domain.
    assert _compare(router(FailingChatModel({})), {"git": 0.5, "fake-model": 0.5})[0] == "answer by git"


def test_compare_with_a_failing_adapter_keeps_the_base_answer() -> None:
    text, route = _compare(router(FailingChatModel({"git": "error"})), {"fake-model": 0.7})
    assert (text, route.cause) == ("answer by fake-model", FallbackCause.UPSTREAM_ERROR)
    assert route.as_dict()["compare"] == {"git": None, "fake-model": 0.7}
