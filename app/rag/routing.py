"""Which model answers a question, and what happens when that model is a LoRA adapter that fails.

The choice, in order: the request's ``model`` (the base or an adapter; ``auto`` asks for routing), the
collection's default model, then routing by domain: the question's embedding against each adapter's
description and example questions, and against a fixed set of general questions
(``app.rag.general_questions``) that stands for the base model. The best adapter answers when it is closer
than the nearest general question by at least ``RoutingPolicy.margin``; otherwise the base model does.

An adapter's answer is replaced by the base model's (same messages, same parameters) when the adapter fails
(it cannot be loaded, the server answers an error, it is too slow, its output is empty or unreadable), is
unsure (mean token log-probability below ``min_mean_logprob``) or writes an answer the citation check finds
unsupported. A stream falls back only before its first token. Failures (not doubts) feed a circuit breaker
per adapter (``purgatory``): after ``breaker_failures`` in a row the adapter gets no traffic for
``breaker_reset_seconds``, then one request probes it again.

The answer flow calls ``choose`` once while preparing and ``complete`` or ``stream`` once to generate; no
other module knows adapters can fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from app.rag.adapters import AUTO, AdapterSpec
from app.rag.embedding import Embedder
from app.rag.errors import (
    AdapterUnavailableError,
    NotFoundError,
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    WendaError,
)
from app.rag.general_questions import GENERAL_QUESTIONS
from app.rag.llm import ChatModel, Completion, GenerationParams, StreamEnd, StreamEvent
from app.rag.types import ChatMessage

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RouteReason(StrEnum):
    REQUEST = "request"  # the request named the model
    COLLECTION = "collection"  # the collection's default model
    AUTO = "auto"  # routing by domain (the base model when no adapter is close enough)
    FALLBACK = "fallback"  # the chosen adapter failed or was unsure: the base model answered


class FallbackCause(StrEnum):
    NOT_LOADED = "not_loaded"  # the backend does not have the adapter and could not load it
    UPSTREAM_ERROR = "upstream_error"  # the server (or local generation) failed
    TIMEOUT = "timeout"
    MALFORMED = "malformed"  # empty or unreadable output
    LOW_CONFIDENCE = "low_confidence"  # mean token log-probability below the threshold
    UNSUPPORTED = "unsupported"  # the citation check found the adapter's answer unsupported
    BREAKER_OPEN = "breaker_open"  # the adapter failed too often lately: not tried
    OUTSCORED = "outscored"  # compare: the base model's answer was better supported than the adapter's


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


_BREAKER_STATES = {"closed": BreakerState.CLOSED, "opened": BreakerState.OPEN, "half-opened": BreakerState.HALF_OPEN}


@dataclass(frozen=True)
class Route:
    """Which model answers and why; on a fallback, ``adapter`` is the one tried first and ``cause`` why it
    did not answer. ``score``, when routing decided, is the best adapter's lead in similarity over the nearest
    general question (at least the margin: the adapter answers)."""

    model: str
    reason: RouteReason
    score: float | None = None
    cause: FallbackCause | None = None
    adapter: str | None = None
    # compare: how well each answer was supported (None: that model gave no answer)
    compared: tuple[tuple[str, float | None], ...] | None = None

    def fallback(self, base_model: str, cause: FallbackCause) -> Route:
        return Route(model=base_model, reason=RouteReason.FALLBACK, score=self.score, cause=cause, adapter=self.model)

    def as_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": self.model, "reason": self.reason.value, "score": self.score}
        fields["cause"] = self.cause.value if self.cause else None
        fields["adapter"] = self.adapter
        fields["compare"] = dict(self.compared) if self.compared is not None else None
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class RoutingPolicy:
    # How much closer (cosine) the question must be to an adapter's domain than to the nearest general
    # question; measured on eval/routing with bench/routing.py.
    margin: float = 0.0
    min_mean_logprob: float | None = -1.5
    fallback_on_unsupported: bool = True
    adapter_timeout_seconds: float = 60.0
    breaker_failures: int = 3
    breaker_reset_seconds: float = 30.0


class DomainScorer:
    """How close a question is to each adapter's domain: the highest cosine similarity of the question to the
    adapter's description or any of its example questions (all embedded as queries: question against
    question); and to the nearest general question. Domain vectors are embedded once per adapter text."""

    def __init__(self, embedder: Embedder, general_questions: Sequence[str] = GENERAL_QUESTIONS) -> None:
        self._embedder = embedder
        self._general_questions = tuple(general_questions)
        self._general: np.ndarray | None = None
        self._vectors: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        self._lock = threading.Lock()

    def _general_vectors(self) -> np.ndarray:
        if self._general is None:
            self._general = self._embedder.embed_queries(list(self._general_questions))
        return self._general

    def _domain_vectors(self, adapter: AdapterSpec) -> np.ndarray:
        texts = tuple(t for t in (adapter.description, *adapter.examples) if t.strip())
        with self._lock:
            cached = self._vectors.get(adapter.name)
            if cached is not None and cached[0] == texts:
                return cached[1]
        vectors = self._embedder.embed_queries(list(texts)) if texts else np.zeros((0, self._embedder.dim), np.float32)
        with self._lock:
            self._vectors[adapter.name] = (texts, vectors)
        return vectors

    def scores(self, question: str, adapters: Sequence[AdapterSpec]) -> tuple[dict[str, float], float]:
        """Each adapter's similarity to the question, and the nearest general question's. Blocking
        (embedding): call off the event loop."""
        domains = {adapter.name: self._domain_vectors(adapter) for adapter in adapters}
        domains = {name: vectors for name, vectors in domains.items() if len(vectors)}
        if not domains:  # no adapter says what it is for: nothing to compare, no embedding to pay
            return {}, -1.0
        query = self._embedder.embed_queries([question])[0]
        result = {name: float(np.max(vectors @ query)) for name, vectors in domains.items()}
        general = self._general_vectors()
        return result, float(np.max(general @ query)) if len(general) else -1.0


class _AdapterFailed(Exception):
    def __init__(self, cause: FallbackCause) -> None:
        super().__init__(cause.value)
        self.cause = cause


class _MalformedOutput(Exception):
    pass


def _cause_of(error: BaseException) -> FallbackCause:
    if isinstance(error, TimeoutError | UpstreamTimeoutError):
        return FallbackCause.TIMEOUT
    if isinstance(error, NotFoundError | AdapterUnavailableError):
        return FallbackCause.NOT_LOADED
    if isinstance(error, _MalformedOutput | UpstreamBadResponseError):
        return FallbackCause.MALFORMED
    return FallbackCause.UPSTREAM_ERROR


class ModelRouter:
    def __init__(
        self,
        *,
        llm: ChatModel,
        adapters: Callable[[], Sequence[AdapterSpec]] = tuple,
        embedder: Embedder | None = None,
        policy: RoutingPolicy | None = None,
    ) -> None:
        self._llm = llm
        self._adapters = adapters
        self._scorer = DomainScorer(embedder) if embedder is not None else None
        self._policy = policy or RoutingPolicy()
        # Cancellation (a client gone) is not the adapter's failure.
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=self._policy.breaker_failures,
            default_ttl=self._policy.breaker_reset_seconds,
            exclude=[asyncio.CancelledError, GeneratorExit],
        )
        self._breaker_states: dict[str, BreakerState] = {}
        self._breakers.add_listener(self._on_breaker_event)

    @property
    def base_model(self) -> str:
        return self._llm.default_model

    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    def adapter(self, name: str) -> AdapterSpec | None:
        return next((a for a in self._adapters() if a.name == name), None)

    def serves(self, name: str) -> bool:
        return name == self.base_model or self.adapter(name) is not None

    def breaker_state(self, name: str) -> BreakerState:
        return self._breaker_states.get(name, BreakerState.CLOSED)

    def _on_breaker_event(self, name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            state = _BREAKER_STATES.get(str(getattr(event, "state", "")), BreakerState.CLOSED)
            self._breaker_states[name] = state
            log = logger.warning if state is BreakerState.OPEN else logger.info
            log("adapter %s: circuit breaker %s", name, state.value)

    async def choose(self, *, requested: str | None, collection_default: str | None, question: str) -> Route:
        """The model for a question; an unknown requested name is a 404 on ``model``."""
        if requested and requested != AUTO:
            if not self.serves(requested):
                raise NotFoundError(
                    f"model {requested!r} is not served here; GET /v1/models lists the base model and adapters",
                    param="model",
                )
            return Route(model=requested, reason=RouteReason.REQUEST)
        if requested != AUTO and collection_default and self.serves(collection_default):
            return Route(model=collection_default, reason=RouteReason.COLLECTION)
        return await self._by_domain(question)

    async def _by_domain(self, question: str) -> Route:
        adapters = self._adapters()
        if not adapters or self._scorer is None:
            return Route(model=self.base_model, reason=RouteReason.AUTO)
        scores, general = await asyncio.to_thread(self._scorer.scores, question, adapters)
        if not scores:
            return Route(model=self.base_model, reason=RouteReason.AUTO)
        best = max(scores, key=lambda name: scores[name])
        # The score is the best adapter's lead over the nearest general question.
        lead = scores[best] - general
        chosen = best if lead >= self._policy.margin else self.base_model
        return Route(model=chosen, reason=RouteReason.AUTO, score=round(lead, 4))

    def _is_adapter(self, route: Route) -> bool:
        return route.model != self.base_model

    def _params(self, params: GenerationParams) -> GenerationParams:
        # Log-probabilities are asked for only where they decide something.
        if self._policy.min_mean_logprob is not None and not params.logprobs:
            return replace(params, logprobs=True)
        return params

    def _unsure(self, completion: Completion) -> bool:
        threshold = self._policy.min_mean_logprob
        logprobs = completion.token_logprobs
        if threshold is None or not logprobs:
            return False
        return sum(logprobs) / len(logprobs) < threshold

    async def _attempt(self, name: str, call: Callable[[], Awaitable[T]], malformed: Callable[[T], bool]) -> T:
        """One call to an adapter under its breaker: its result, or ``_AdapterFailed`` with the cause."""
        breaker = await self._breakers.get_breaker(name)
        try:
            async with breaker:
                spec = self.adapter(name)
                if spec is None:  # removed since the route was chosen
                    raise AdapterUnavailableError(f"adapter {name!r} is no longer registered")
                await self._llm.load_adapter(spec)
                async with asyncio.timeout(self._policy.adapter_timeout_seconds):
                    result = await call()
                if malformed(result):
                    raise _MalformedOutput
                return result
        except OpenedState as error:
            raise _AdapterFailed(FallbackCause.BREAKER_OPEN) from error
        except Exception as error:
            cause = _cause_of(error)
            logger.warning("adapter %s failed (%s): %s; the base model answers", name, cause.value, _describe(error))
            raise _AdapterFailed(cause) from error

    async def complete(
        self,
        route: Route,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        finish: Callable[[Completion, Route], Awaitable[T]],
        unsupported: Callable[[T], bool],
    ) -> T:
        """Generate with the route's model and ``finish`` (check) the completion; on an adapter's failure,
        doubt or unsupported answer, generate and finish with the base model instead."""
        if not self._is_adapter(route):
            return await finish(await self._llm.complete(messages, model=route.model, params=params), route)
        try:
            completion = await self._attempt(
                route.model,
                lambda: self._llm.complete(messages, model=route.model, params=self._params(params)),
                lambda c: not c.text.strip(),
            )
        except _AdapterFailed as failed:
            return await self._complete_with_base(route.fallback(self.base_model, failed.cause), messages, params, finish)
        if self._unsure(completion):
            return await self._complete_with_base(
                route.fallback(self.base_model, FallbackCause.LOW_CONFIDENCE), messages, params, finish
            )
        result = await finish(completion, route)
        if self._policy.fallback_on_unsupported and unsupported(result):
            return await self._complete_with_base(
                route.fallback(self.base_model, FallbackCause.UNSUPPORTED), messages, params, finish
            )
        return result

    async def compare(
        self,
        route: Route,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        finish: Callable[[Completion, Route], Awaitable[T]],
        score: Callable[[T], float],
        relabel: Callable[[T, Route], T],
    ) -> T:
        """The adapter and the base model answer at once; the better-supported answer is kept (the adapter's
        on a tie), and the route reports both scores. An adapter that fails leaves the base model's answer."""
        if not self._is_adapter(route):
            return await self.complete(route, messages, params, finish, lambda _result: False)

        async def adapter_answer() -> T:
            completion = await self._attempt(
                route.model,
                lambda: self._llm.complete(messages, model=route.model, params=self._params(params)),
                lambda c: not c.text.strip(),
            )
            return await finish(completion, route)

        async def base_answer() -> T:
            completion = await self._llm.complete(messages, model=self.base_model, params=params)
            return await finish(completion, route.fallback(self.base_model, FallbackCause.OUTSCORED))

        adapter_result, base_result = await asyncio.gather(adapter_answer(), base_answer(), return_exceptions=True)
        for result in (adapter_result, base_result):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: no model's failure
        adapter_score = None if isinstance(adapter_result, BaseException) else round(score(adapter_result), 4)
        base_score = None if isinstance(base_result, BaseException) else round(score(base_result), 4)
        compared = ((route.model, adapter_score), (self.base_model, base_score))
        if isinstance(adapter_result, BaseException):
            if isinstance(base_result, BaseException):
                raise base_result
            failed = adapter_result.cause if isinstance(adapter_result, _AdapterFailed) else FallbackCause.UPSTREAM_ERROR
            return relabel(base_result, replace(route.fallback(self.base_model, failed), compared=compared))
        if isinstance(base_result, BaseException) or base_score is None or adapter_score is None:
            return relabel(adapter_result, replace(route, compared=compared))
        if base_score > adapter_score:
            outscored = route.fallback(self.base_model, FallbackCause.OUTSCORED)
            return relabel(base_result, replace(outscored, compared=compared))
        return relabel(adapter_result, replace(route, compared=compared))

    async def _complete_with_base(
        self,
        route: Route,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        finish: Callable[[Completion, Route], Awaitable[T]],
    ) -> T:
        return await finish(await self._llm.complete(messages, model=self.base_model, params=params), route)

    async def stream(
        self, route: Route, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[Route | StreamEvent, None]:
        """The route that answers (first), then the model's stream events. An adapter that fails before its
        first token is replaced by the base model; after it, its errors are the stream's."""
        if self._is_adapter(route):
            events = self._llm.stream(messages, model=route.model, params=params)
            try:
                first = await self._attempt(
                    route.model,
                    lambda: anext(events),
                    lambda e: isinstance(e, StreamEnd),  # ended before any text: nothing to answer with
                )
            except (_AdapterFailed, StopAsyncIteration) as failed:
                await _close_quietly(events)
                cause = failed.cause if isinstance(failed, _AdapterFailed) else FallbackCause.MALFORMED
                route = route.fallback(self.base_model, cause)
            else:
                yield route
                async with aclosing(events):
                    yield first
                    async for event in events:
                        yield event
                return
        yield route
        async with aclosing(self._llm.stream(messages, model=route.model, params=params)) as base_events:
            async for event in base_events:
                yield event


async def _close_quietly(events: AsyncGenerator[StreamEvent, None]) -> None:
    try:
        await events.aclose()
    except Exception:  # the stream already failed; its error was logged as the fallback's cause
        logger.debug("closing a failed adapter stream raised", exc_info=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, WendaError):
        return error.message
    return type(error).__name__

