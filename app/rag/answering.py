"""The one answer flow: facts → retrieve → supplementary evidence (corrections) → pack → generate → check
against the facts and the evidence → record, or say plainly the documents do not say.

Every way of asking (``/v1/ask``, ``/v1/chat/completions``, ``wenda ask``, ``wenda eval answers``), streamed
or not, runs through ``AnswerFlow``: ``prepare`` does everything that can fail before the first byte of a
response, ``stream`` generates and checks, and both hand what happened to the recorder, whether the answer
was given, refused, cancelled by the client or ended by an error. Each step is a small object of its own
(prompts, the chat model, the citation checker, the refusal policy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Protocol

from app.rag.adapters import AUTO
from app.rag.answerability import unmentioned_names
from app.rag.citations import CheckedAnswer, Passage, check_answer
from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.evidence import Correction, DocumentSpan, Evidence, Fact
from app.rag.facts.layer import FactFindings, FactLayer
from app.rag.facts.postcheck import FactCheck, FactVerdict, check_facts
from app.rag.llm import ChatModel, Completion, GenerationParams, StreamDelta, StreamEnd, Usage
from app.rag.prompts import PromptLibrary, detect_language, passages_for_prompt
from app.rag.refusal import Refusal, RefusalPolicy, RefusalReason
from app.rag.routing import ModelRouter, Route, RouteReason
from app.rag.types import AnswerStatus, ChatMessage

logger = logging.getLogger(__name__)

Retrieve = Callable[[str, int], Awaitable[list[DocumentSpan]]]

# Tokens kept free beyond max_tokens: chat-template tokens the count may miss, and rounding.
PACKING_MARGIN = 16


class EvidenceSource(Protocol):
    """Evidence beyond the documents for a question: facts (the clock, tools) or verified corrections."""

    async def evidence_for(self, question: str, language: str) -> Sequence[Fact | Correction]: ...


@dataclass(frozen=True)
class AnswerRequest:
    question: str
    # The model the caller asked for (the base, an adapter, or "auto"); None: the collection's default, else
    # routing (app.rag.routing).
    model: str | None = None
    template: str = "qa"
    top_k: int = 5
    params: GenerationParams = field(default_factory=GenerationParams)
    history: tuple[ChatMessage, ...] = ()
    default_model: str | None = None  # the collection's default model, if it has one
    timezone: str | None = None  # the asker's IANA time zone; None: the server's default
    compare: bool = False  # an adapter and the base model answer at once; the better-supported answer is kept


@dataclass(frozen=True)
class PreparedAnswer:
    """Everything before generation. ``passages`` are the packed evidence, numbered as the model sees it;
    ``evidence`` is all that was found, in rank order."""

    request: AnswerRequest
    language: str
    standalone_question: str
    evidence: tuple[Evidence, ...]
    passages: tuple[Passage, ...]
    messages: tuple[ChatMessage, ...]
    usage: Usage  # what preparing cost (the rewrite call), added to the answer's usage
    timings: dict[str, float]
    route: Route
    findings: FactFindings  # the facts found before retrieval, and today's date where the asker is
    refusal: Refusal | None = None  # set when the evidence cannot answer: the model is then not asked
    # An approved correction of this very question (an exact repeat): it is the answer, the model is not asked.
    direct: Correction | None = None

    @property
    def should_generate(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class Answer:
    status: AnswerStatus
    text: str
    grounded: bool
    language: str
    question: str
    standalone_question: str
    template: str
    template_version: str
    checked: CheckedAnswer | None
    usage: Usage
    model: str
    timings: dict[str, float]
    evidence: tuple[Evidence, ...]
    passages: tuple[Passage, ...]
    messages: tuple[ChatMessage, ...]
    raw_answer: str = ""
    refusal: Refusal | None = None
    error: str | None = None  # for a failed answer: the error's type, never its text (it may quote documents)
    route: Route | None = None  # which model answered and why; None when the request failed before choosing
    facts: tuple[Fact, ...] = ()  # every fact found for the question (packed or not)
    fact_check: FactCheck = field(default_factory=lambda: FactCheck(FactVerdict.NONE))
    fact_notes: tuple[str, ...] = ()  # tools asked that gave nothing, and why
    timezone: str = ""
    # The approved correction given as the answer itself (the question repeated the corrected one exactly).
    from_correction: int | None = None

    @property
    def passages_used(self) -> int:
        return len(self.passages)

    @property
    def passages_dropped(self) -> int:
        return len(self.evidence) - len(self.passages)


Record = Callable[[Answer], None]


def is_refusal(text: str, refusal: str) -> bool:
    """The model gave the template's refusal sentence (possibly with trimmings)."""
    core = refusal.strip().rstrip("。.!！")
    return bool(core) and core.lower() in text.lower()


def _discard(_answer: Answer) -> None:
    pass


def _support(answer: Answer) -> float:
    """How well an answer rests on its evidence, for compare: the supported share if grounded, else 0."""
    return answer.checked.supported_share if answer.grounded and answer.checked else 0.0


def _with_route(answer: Answer, route: Route) -> Answer:
    return replace(answer, route=route)


def _unsupported(answer: Answer) -> bool:
    return answer.refusal is not None and answer.refusal.reason is RefusalReason.UNSUPPORTED


class AnswerFlow:
    def __init__(
        self,
        *,
        llm: ChatModel,
        prompts: PromptLibrary,
        retrieve: Retrieve,
        policy: RefusalPolicy,
        sources: Sequence[EvidenceSource] = (),
        record: Record = _discard,
        router: ModelRouter | None = None,
        facts: FactLayer | None = None,
    ) -> None:
        self._llm = llm
        self._facts = facts or FactLayer()
        self._router = router or ModelRouter(llm=llm)
        self._prompts = prompts
        self._retrieve = retrieve
        self._policy = policy
        self._sources = tuple(sources)
        self._record = record

    async def answer(self, request: AnswerRequest) -> Answer:
        """The checked answer, not streamed."""
        return await self.complete(await self.prepare(request))

    async def complete(self, prepared: PreparedAnswer) -> Answer:
        """Generate in one call (the backend's non-streaming path), check and record."""
        request = prepared.request
        timings = dict(prepared.timings)
        began = time.perf_counter()
        try:
            direct = await self._direct_answer(prepared, timings, began)
            if direct is not None:
                answer = direct
            elif prepared.should_generate:

                async def finish(completion: Completion, route: Route) -> Answer:
                    timings["generate"] = time.perf_counter() - began  # a fallback's includes the adapter's
                    return await self._finish(prepared, completion, timings, route)

                if request.compare:
                    answer = await self._router.compare(
                        prepared.route, prepared.messages, request.params, finish, _support, _with_route
                    )
                else:
                    # The router generates, and generates again with the base model if the adapter fails.
                    answer = await self._router.complete(
                        prepared.route, prepared.messages, request.params, finish, _unsupported
                    )
            else:
                # Nothing to answer from: no call, no invention.
                completion = Completion(text="", usage=Usage(0, 0), finish_reason="stop", model=prepared.route.model)
                timings["generate"] = time.perf_counter() - began
                answer = await self._finish(prepared, completion, timings, prepared.route)
        except asyncio.CancelledError:
            self._record_unfinished(prepared, AnswerStatus.CANCELLED, "", timings, began, None)
            raise
        except Exception as error:
            self._record_unfinished(prepared, AnswerStatus.FAILED, "", timings, began, error)
            raise
        self._record(answer)
        return answer

    async def prepare(self, request: AnswerRequest) -> PreparedAnswer:
        """Language, standalone question, retrieval, supplementary evidence and packing. Raises before any
        text is generated, so a streaming caller can still answer with an error status."""
        timings: dict[str, float] = {}
        language = detect_language(request.question)
        try:
            template = self._prompts.get(request.template)  # unknown names fail before any work
            self._facts.check_timezone(request.timezone)  # so does an unknown time zone
            if request.model and request.model != AUTO:
                # An unknown model is a 404 before any work; routing itself waits for the standalone question.
                await self._router.choose(requested=request.model, collection_default=None, question="")
            began = time.perf_counter()
            standalone, rewrite_usage = await self._standalone_question(request, language)
            timings["rewrite"] = time.perf_counter() - began

            began = time.perf_counter()
            # Dates resolved first: retrieval looks for "上周五" as the day it was.
            findings = await self._facts.gather(standalone, language, request.timezone)
            timings["facts"] = time.perf_counter() - began

            began = time.perf_counter()
            chunks = await self._retrieve(findings.retrieval_query, request.top_k)
            timings["retrieve"] = time.perf_counter() - began

            began = time.perf_counter()
            route = await self._router.choose(
                requested=request.model, collection_default=request.default_model, question=standalone
            )
            timings["route"] = time.perf_counter() - began

            began = time.perf_counter()
            supplementary = [e for s in self._sources for e in await s.evidence_for(standalone, language)]
            timings["evidence"] = time.perf_counter() - began

            began = time.perf_counter()
            # Corrections and facts first: they are few, specific, and the first passage is read most closely.
            evidence: list[Evidence] = [
                *(e for e in supplementary if isinstance(e, Correction)),
                *findings.facts,
                *(e for e in supplementary if isinstance(e, Fact)),
                *chunks,
            ]
            passages, messages = await self._pack(template.name, language, standalone, evidence, request, findings)
            timings["pack"] = time.perf_counter() - began
        except Exception as error:
            self._record_failure(request, language, timings, error)
            raise
        return PreparedAnswer(
            request=request,
            language=language,
            standalone_question=standalone,
            evidence=tuple(evidence),
            passages=tuple(passages),
            messages=tuple(messages),
            usage=rewrite_usage,
            timings=timings,
            route=route,
            findings=findings,
            refusal=self._refusal_before_generation(standalone, evidence, passages),
            direct=next(
                (p.evidence for p in passages if isinstance(p.evidence, Correction) and p.evidence.exact), None
            ),
        )

    async def stream(self, prepared: PreparedAnswer) -> AsyncIterator[str | Answer]:
        """Answer text deltas as the model writes them, then the checked ``Answer``. The answer is recorded
        whatever happens: given, refused, cancelled (the consumer closed the stream) or failed."""
        request = prepared.request
        timings = dict(prepared.timings)
        began = time.perf_counter()
        parts: list[str] = []
        end: StreamEnd | None = None
        route = prepared.route
        try:
            direct = await self._direct_answer(prepared, timings, began)
            if direct is not None:
                yield direct.text
                self._record(direct)
                yield direct
                return
            if prepared.should_generate:
                # aclosing: a consumer that stops early closes the model's stream too, which cancels generation.
                # The router says first which model answers (an adapter failing before its first token is
                # replaced by the base model).
                async with aclosing(
                    self._router.stream(prepared.route, prepared.messages, request.params)
                ) as events:
                    async for event in events:
                        if isinstance(event, Route):
                            route = event
                        elif isinstance(event, StreamDelta):
                            parts.append(event.text)
                            yield event.text
                        else:
                            end = event
            timings["generate"] = time.perf_counter() - began
            completion = Completion(
                text="".join(parts),
                usage=end.usage if end else Usage(0, 0),
                finish_reason=end.finish_reason if end else "stop",
                model=end.model if end else route.model,
            )
            answer = await self._finish(prepared, completion, timings, route)
        except (GeneratorExit, asyncio.CancelledError):
            self._record_unfinished(prepared, AnswerStatus.CANCELLED, "".join(parts), timings, began, None, route)
            raise
        except Exception as error:
            self._record_unfinished(prepared, AnswerStatus.FAILED, "".join(parts), timings, began, error, route)
            raise
        self._record(answer)
        yield answer

    async def _direct_answer(
        self, prepared: PreparedAnswer, timings: dict[str, float], began: float
    ) -> Answer | None:
        """The approved correction of this very question as the answer, checked like any answer (it cites
        itself); None when there is none, or when the check does not find it grounded (the model answers)."""
        if prepared.direct is None:
            return None
        completion = Completion(
            text=prepared.direct.text, usage=Usage(0, 0), finish_reason="stop", model=prepared.route.model
        )
        timings["generate"] = time.perf_counter() - began
        answer = await self._finish(prepared, completion, timings, prepared.route)
        if not answer.grounded:
            logger.warning(
                "correction %s did not pass the citation check as an answer", prepared.direct.feedback_id
            )
            return None
        return replace(answer, from_correction=prepared.direct.feedback_id)

    async def _pack(
        self,
        template: str,
        language: str,
        question: str,
        evidence: Sequence[Evidence],
        request: AnswerRequest,
        findings: FactFindings,
    ) -> tuple[list[Passage], list[ChatMessage]]:
        """Number the evidence and drop the lowest-ranked until the prompt fits the model's window. Adapters
        share the base model's tokenizer and window, so the base model counts for all."""
        base_model = self._router.base_model
        budget = await self._llm.context_window(base_model) - request.params.max_tokens - PACKING_MARGIN
        kept = [Passage(number=n, evidence=e) for n, e in enumerate(evidence, start=1)]
        while True:
            messages = self._messages(template, language, question, kept, request.history, findings)
            if await self._llm.count_tokens(messages, base_model) <= budget or not kept:
                break
            kept.pop()
        if not kept and evidence:
            logger.warning(
                "no evidence fits the context window of %s with max_tokens=%d",
                base_model,
                request.params.max_tokens,
            )
        return kept, messages

    def _messages(
        self,
        template: str,
        language: str,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[ChatMessage],
        findings: FactFindings,
    ) -> list[ChatMessage]:
        variables = {
            "question": question,
            "passages": passages_for_prompt(passages),
            # Today where the asker is, at day granularity (the system prompt stays the same all day), and
            # the facts found, for templates that phrase them their own way.
            **findings.calendar.for_template(language),
            "facts": [{"name": f.name, "value": f.value, "source": f.source} for f in findings.facts],
        }
        rendered = self._prompts.render(template, language, variables)
        # Earlier turns go between the instructions and the new question, as a chat model expects them.
        return [rendered[0], *history, *rendered[1:]]

    async def _standalone_question(self, request: AnswerRequest, language: str) -> tuple[str, Usage]:
        if not request.history:
            return request.question, Usage(0, 0)
        messages = self._prompts.render(
            "rewrite",
            language,
            {
                "question": request.question,
                "history": [{"role": m.role, "content": m.content} for m in request.history],
            },
        )
        # The base model rewrites: which model answers is decided on the rewritten question.
        completion = await self._llm.complete(
            messages, model=self._router.base_model, params=GenerationParams(temperature=0.0, max_tokens=128)
        )
        rewritten = completion.text.strip().splitlines()[0].strip() if completion.text.strip() else ""
        return rewritten or request.question, completion.usage

    def _refusal_before_generation(
        self, question: str, evidence: Sequence[Evidence], passages: Sequence[Passage]
    ) -> Refusal | None:
        if not evidence:
            return Refusal(RefusalReason.NO_PASSAGES, "no passage was found")
        if not passages:
            return Refusal(RefusalReason.NO_ROOM, "no passage fits the model's context window")
        if self._policy.refuse_unmentioned_names:
            unmentioned = unmentioned_names(question, [p.evidence.mentionable_text for p in passages])
            if unmentioned:
                names = ", ".join(repr(n) for n in unmentioned)
                return Refusal(
                    RefusalReason.UNMENTIONED_NAME, f"the question names {names}, which no passage mentions"
                )
        return None

    async def _finish(
        self, prepared: PreparedAnswer, completion: Completion, timings: dict[str, float], route: Route
    ) -> Answer:
        """Check the model's answer against its evidence and decide whether it is grounded."""
        began = time.perf_counter()
        template = self._prompts.get(prepared.request.template)
        refusal_text = template.refusal[prepared.language]
        refusal = prepared.refusal
        checked: CheckedAnswer | None = None
        grounded = False
        fact_check = FactCheck(FactVerdict.NONE)
        if refusal is None:
            if is_refusal(completion.text, refusal_text) or not completion.text.strip():
                refusal = Refusal(RefusalReason.MODEL_REFUSED, "the model found no answer in the passages")
            else:
                # A date or sum that contradicts a fact is corrected before the citation check reads it.
                text, fact_check = check_facts(
                    completion.text, prepared.findings, prepared.passages, prepared.language
                )
                # CPU work on a long answer: off the event loop.
                checked = await asyncio.to_thread(
                    check_answer,
                    text,
                    prepared.passages,
                    prepared.standalone_question,
                    self._policy,
                )
                grounded = self._grounded(checked)
                if not grounded:
                    refusal = Refusal(RefusalReason.UNSUPPORTED, "no passage supports enough of the answer")
        timings["verify"] = time.perf_counter() - began
        usage = Usage(
            prepared.usage.prompt_tokens + completion.usage.prompt_tokens,
            prepared.usage.completion_tokens + completion.usage.completion_tokens,
        )
        return Answer(
            status=AnswerStatus.ANSWERED if grounded else AnswerStatus.REFUSED,
            text=checked.text if grounded and checked else refusal_text,
            grounded=grounded,
            language=prepared.language,
            question=prepared.request.question,
            standalone_question=prepared.standalone_question,
            template=template.name,
            template_version=template.version,
            checked=checked if grounded else None,
            usage=usage,
            model=completion.model,
            timings={k: round(v, 4) for k, v in timings.items()},
            evidence=prepared.evidence,
            passages=prepared.passages,
            messages=prepared.messages,
            raw_answer=completion.text,
            refusal=None if grounded else refusal,
            route=route,
            facts=prepared.findings.facts,
            fact_check=fact_check,
            fact_notes=prepared.findings.notes,
            timezone=prepared.findings.calendar.timezone,
        )

    def _grounded(self, checked: CheckedAnswer) -> bool:
        # A supported first claim has its citations, so no separate check that there are any.
        first_claim_ok = checked.answer_supported or not self._policy.require_supported_first_claim
        return (
            first_claim_ok
            and bool(checked.citations)
            and checked.supported_share >= self._policy.min_supported_share
        )

    def _unfinished(
        self,
        prepared: PreparedAnswer,
        status: AnswerStatus,
        raw: str,
        timings: dict[str, float],
        error: str | None,
        route: Route | None,
    ) -> Answer:
        """The record of an answer that did not finish: cancelled by the client or ended by an error."""
        request = prepared.request
        try:
            version = self._prompts.get(request.template).version
        except NotFoundError:
            version = ""
        return Answer(
            status=status,
            text="",
            grounded=False,
            language=prepared.language,
            question=request.question,
            standalone_question=prepared.standalone_question,
            template=request.template,
            template_version=version,
            checked=None,
            usage=prepared.usage,
            model=route.model if route else (request.model or self._router.base_model),
            timings={k: round(v, 4) for k, v in timings.items()},
            evidence=prepared.evidence,
            passages=prepared.passages,
            messages=prepared.messages,
            raw_answer=raw,
            error=error,
            route=route,
            facts=prepared.findings.facts,
            fact_notes=prepared.findings.notes,
            timezone=prepared.findings.calendar.timezone,
        )

    def _record_unfinished(
        self,
        prepared: PreparedAnswer,
        status: AnswerStatus,
        raw: str,
        timings: dict[str, float],
        generation_began: float,
        error: Exception | None,
        route: Route | None = None,
    ) -> None:
        timings["generate"] = time.perf_counter() - generation_began
        error_name = type(error).__name__ if error is not None else None
        self._record(self._unfinished(prepared, status, raw, timings, error_name, route or prepared.route))

    def _record_failure(
        self, request: AnswerRequest, language: str, timings: dict[str, float], error: Exception
    ) -> None:
        """A request that failed before generation (an upstream error while packing, say) is recorded too;
        bad input (an unknown template) is not an answer and is not."""
        if isinstance(error, InvalidInputError | NotFoundError):
            return
        nothing_yet = PreparedAnswer(
            request=request,
            language=language,
            standalone_question=request.question,
            evidence=(),
            passages=(),
            messages=(),
            usage=Usage(0, 0),
            timings=timings,
            route=Route(model=request.model or self._router.base_model, reason=RouteReason.REQUEST),
            findings=FactFindings(facts=(), retrieval_query=request.question, calendar=self._facts.calendar(request.timezone)),
        )
        self._record(self._unfinished(nothing_yet, AnswerStatus.FAILED, "", timings, type(error).__name__, None))
