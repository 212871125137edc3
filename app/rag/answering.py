"""Grounded answers: retrieve, pack, generate, check citations — or say plainly the documents do not say.

``AnswerPipeline.answer`` reads top to bottom as the steps it takes; each step is a small function or object
of its own (prompts, packing, the chat model, the citation checker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.rag.answerability import unmentioned_names
from app.rag.citations import CheckedAnswer, Passage, check_answer
from app.rag.llm import ChatModel, Completion, GenerationParams, StreamDelta, StreamEnd, Usage
from app.rag.prompts import PromptLibrary, detect_language, passages_for_prompt
from app.rag.types import ChatMessage, RetrievedChunk

logger = logging.getLogger(__name__)

Retrieve = Callable[[str, int], Awaitable[list[RetrievedChunk]]]

# Tokens kept free beyond max_tokens: chat-template tokens the count may miss, and rounding.
PACKING_MARGIN = 16
# Below this share of supported sentences an answer is not called grounded.
MIN_SUPPORTED_SHARE = 0.5


@dataclass(frozen=True)
class AskOptions:
    model: str
    template: str = "qa"
    top_k: int = 5
    params: GenerationParams = field(default_factory=GenerationParams)
    history: tuple[ChatMessage, ...] = ()
    debug: bool = False


@dataclass(frozen=True)
class Answer:
    text: str
    grounded: bool
    language: str
    question: str
    standalone_question: str
    checked: CheckedAnswer | None
    usage: Usage
    model: str
    timings: dict[str, float]
    passages_used: int
    passages_dropped: int
    raw_answer: str = ""
    messages: tuple[ChatMessage, ...] = ()
    refusal_reason: str = ""


@dataclass(frozen=True)
class PreparedPrompt:
    language: str
    standalone_question: str
    passages: tuple[Passage, ...]
    dropped: int
    messages: tuple[ChatMessage, ...]
    usage: Usage  # what preparing cost (the rewrite call), added to the answer's usage
    refusal_reason: str = ""  # set when the passages cannot answer: the model is then not asked

    @property
    def should_generate(self) -> bool:
        return bool(self.passages) and not self.refusal_reason


def _passages(chunks: Sequence[RetrievedChunk]) -> list[Passage]:
    return [
        Passage(
            number=n,
            chunk_id=c.chunk_id,
            document_id=c.document_id,
            source=c.source,
            text=c.text,
            start=c.start,
            section=c.section,
        )
        for n, c in enumerate(chunks, start=1)
    ]


def is_refusal(text: str, refusal: str) -> bool:
    """The model gave the template's refusal sentence (possibly with trimmings)."""
    core = refusal.strip().rstrip("。.!！")
    return bool(core) and core.lower() in text.lower()


class AnswerPipeline:
    def __init__(self, *, llm: ChatModel, prompts: PromptLibrary, retrieve: Retrieve) -> None:
        self._llm = llm
        self._prompts = prompts
        self._retrieve = retrieve

    async def prepare(self, question: str, options: AskOptions, timings: dict[str, float]) -> PreparedPrompt:
        """Everything before generation: language, standalone question, retrieval and packing."""
        template = self._prompts.get(options.template)  # unknown names fail before any work
        language = detect_language(question)
        began = time.perf_counter()
        standalone, rewrite_usage = await self._standalone_question(question, language, options)
        timings["rewrite"] = time.perf_counter() - began

        began = time.perf_counter()
        chunks = await self._retrieve(standalone, options.top_k)
        timings["retrieve"] = time.perf_counter() - began

        began = time.perf_counter()
        passages = _passages(chunks)
        budget = await self._llm.context_window(options.model) - options.params.max_tokens - PACKING_MARGIN
        kept = list(passages)
        while True:
            messages = self._messages(template.name, language, standalone, kept, options.history)
            if await self._llm.count_tokens(messages, options.model) <= budget or not kept:
                break
            kept.pop()  # the lowest-ranked passage makes room first
        timings["pack"] = time.perf_counter() - began
        if not kept and passages:
            logger.warning(
                "no passage fits the context window of %s with max_tokens=%d",
                options.model,
                options.params.max_tokens,
            )
        return PreparedPrompt(
            language=language,
            standalone_question=standalone,
            passages=tuple(kept),
            dropped=len(passages) - len(kept),
            messages=tuple(messages),
            usage=rewrite_usage,
            refusal_reason=_refusal_reason(standalone, kept),
        )

    def _messages(
        self,
        template: str,
        language: str,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[ChatMessage],
    ) -> list[ChatMessage]:
        rendered = self._prompts.render(
            template,
            language,
            {
                "question": question,
                "passages": passages_for_prompt([(p.source, p.section, p.text) for p in passages]),
            },
        )
        # Earlier turns go between the instructions and the new question, as a chat model expects them.
        return [rendered[0], *history, *rendered[1:]]

    async def _standalone_question(
        self, question: str, language: str, options: AskOptions
    ) -> tuple[str, Usage]:
        if not options.history:
            return question, Usage(0, 0)
        messages = self._prompts.render(
            "rewrite",
            language,
            {
                "question": question,
                "history": [{"role": m.role, "content": m.content} for m in options.history],
            },
        )
        completion = await self._llm.complete(
            messages, model=options.model, params=GenerationParams(temperature=0.0, max_tokens=128)
        )
        rewritten = completion.text.strip().splitlines()[0].strip() if completion.text.strip() else ""
        return rewritten or question, completion.usage

    def finish(
        self,
        question: str,
        options: AskOptions,
        prepared: PreparedPrompt,
        completion: Completion,
        timings: dict[str, float],
    ) -> Answer:
        """Check the model's answer against its passages and decide whether it is grounded."""
        began = time.perf_counter()
        refusal = self._prompts.get(options.template).refusal[prepared.language]
        checked: CheckedAnswer | None = None
        grounded = False
        if prepared.should_generate and not is_refusal(completion.text, refusal):
            checked = check_answer(completion.text, prepared.passages, prepared.standalone_question)
            # A supported first claim has its citations, so no separate check that there are any.
            grounded = checked.answer_supported and checked.supported_share >= MIN_SUPPORTED_SHARE
        timings["verify"] = time.perf_counter() - began
        usage = Usage(
            prepared.usage.prompt_tokens + completion.usage.prompt_tokens,
            prepared.usage.completion_tokens + completion.usage.completion_tokens,
        )
        return Answer(
            text=checked.text if grounded and checked else refusal,
            grounded=grounded,
            language=prepared.language,
            question=question,
            standalone_question=prepared.standalone_question,
            checked=checked if grounded else None,
            usage=usage,
            model=completion.model,
            timings={k: round(v, 4) for k, v in timings.items()},
            passages_used=len(prepared.passages),
            passages_dropped=prepared.dropped,
            raw_answer=completion.text,
            messages=prepared.messages if options.debug else (),
            refusal_reason="" if grounded else prepared.refusal_reason or _unsupported_reason(checked),
        )

    async def answer(self, question: str, options: AskOptions) -> Answer:
        timings: dict[str, float] = {}
        prepared = await self.prepare(question, options, timings)
        began = time.perf_counter()
        if prepared.should_generate:
            completion = await self._llm.complete(
                prepared.messages, model=options.model, params=options.params
            )
        else:
            # Nothing retrieved, or nothing that can answer: no call, no invention.
            completion = Completion(text="", usage=Usage(0, 0), finish_reason="stop", model=options.model)
        timings["generate"] = time.perf_counter() - began
        return self.finish(question, options, prepared, completion, timings)

    async def answer_stream(self, question: str, options: AskOptions) -> AsyncIterator[str | Answer]:
        """Answer text deltas as the model writes them, then the checked ``Answer``."""
        timings: dict[str, float] = {}
        prepared = await self.prepare(question, options, timings)
        async for item in self.generate_stream(question, options, prepared, timings):
            yield item

    async def generate_stream(
        self, question: str, options: AskOptions, prepared: PreparedPrompt, timings: dict[str, float]
    ) -> AsyncIterator[str | Answer]:
        """The streaming half after ``prepare``: callers that must fail before streaming prepare first."""
        began = time.perf_counter()
        parts: list[str] = []
        end: StreamEnd | None = None
        if prepared.should_generate:
            async for event in self._llm.stream(
                prepared.messages, model=options.model, params=options.params
            ):
                if isinstance(event, StreamDelta):
                    parts.append(event.text)
                    yield event.text
                else:
                    end = event
        timings["generate"] = time.perf_counter() - began
        completion = Completion(
            text="".join(parts),
            usage=end.usage if end else Usage(0, 0),
            finish_reason=end.finish_reason if end else "stop",
            model=end.model if end else options.model,
        )
        yield self.finish(question, options, prepared, completion, timings)


def _refusal_reason(question: str, passages: Sequence[Passage]) -> str:
    if not passages:
        return "no passage was found"
    unmentioned = unmentioned_names(question, [f"{p.source} {p.section} {p.text}" for p in passages])
    if unmentioned:
        return "the question names " + ", ".join(repr(n) for n in unmentioned) + ", which no passage mentions"
    return ""


def _unsupported_reason(checked: CheckedAnswer | None) -> str:
    if checked is None:
        return "the model found no answer in the passages"
    return "no passage supports enough of the answer"


def answer_payload_debug(answer: Answer) -> dict[str, Any]:
    return {
        "messages": [{"role": m.role, "content": m.content} for m in answer.messages],
        "raw_answer": answer.raw_answer,
        "standalone_question": answer.standalone_question,
        "passages_used": answer.passages_used,
        "passages_dropped": answer.passages_dropped,
        "refusal_reason": answer.refusal_reason,
    }
