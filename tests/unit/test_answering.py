"""The answer pipeline's packing and refusal rules, on fakes."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.rag.answering import AnswerPipeline, AskOptions
from app.rag.llm import GenerationParams
from app.rag.prompts import PromptLibrary
from app.rag.types import RetrievedChunk
from app.services import prompts_directory
from tests.fakes import FakeChatModel

TEXT = "粘滞位保护目录中的文件不被其他用户删除。" * 4


def _chunks(count: int) -> list[RetrievedChunk]:
    return [
        RetrievedChunk(
            chunk_id=i, document_id=1, source="a.txt", text=f"第{i}段。{TEXT}", score=1.0, start=0, end=0
        )
        for i in range(1, count + 1)
    ]


def _pipeline(llm: FakeChatModel, count: int) -> AnswerPipeline:
    async def retrieve(question: str, top_k: int) -> list[RetrievedChunk]:
        return _chunks(min(count, top_k))

    return AnswerPipeline(llm=llm, prompts=PromptLibrary(prompts_directory(Settings())), retrieve=retrieve)


def test_passages_that_do_not_fit_the_window_are_dropped_and_reported() -> None:
    roomy = asyncio.run(
        _pipeline(FakeChatModel(window=8000), 5).answer("粘滞位有什么作用？", AskOptions(model="m"))
    )
    assert (roomy.passages_used, roomy.passages_dropped) == (5, 0)
    # A window that holds the instructions, the examples and about two passages beside max_tokens.
    tight_llm = FakeChatModel(window=1)
    base = asyncio.run(
        tight_llm.count_tokens(
            _pipeline(tight_llm, 0)._messages("qa", "zh", "粘滞位有什么作用？", [], ()), "m"
        )
    )
    per_passage = len(_chunks(1)[0].text) // 2 + 12
    tight_llm.window = base + 2 * per_passage + 100 + 16
    options = AskOptions(model="m", params=GenerationParams(max_tokens=100))
    tight = asyncio.run(_pipeline(tight_llm, 5).answer("粘滞位有什么作用？", options))
    assert 1 <= tight.passages_used < 5 and tight.passages_used + tight.passages_dropped == 5
    assert asyncio.run(tight_llm.count_tokens(tight_llm.calls[-1], "m")) + 100 + 16 <= tight_llm.window


def test_no_room_for_any_passage_means_no_generation_and_a_refusal() -> None:
    llm = FakeChatModel(window=50)
    answer = asyncio.run(_pipeline(llm, 3).answer("粘滞位有什么作用？", AskOptions(model="m")))
    assert answer.passages_used == 0 and answer.grounded is False
    assert answer.text == "文档中没有找到这个问题的答案。" and llm.calls == []


def test_nothing_retrieved_is_refused_without_calling_the_model() -> None:
    llm = FakeChatModel()
    answer = asyncio.run(_pipeline(llm, 0).answer("What is a sticky bit?", AskOptions(model="m")))
    assert answer.grounded is False and llm.calls == []
    assert answer.text == "The documents do not contain the answer to this question."


def test_a_question_naming_what_no_passage_mentions_is_refused_without_calling_the_model() -> None:
    llm = FakeChatModel()
    answer = asyncio.run(_pipeline(llm, 3).answer("exFAT 的粘滞位有什么作用？", AskOptions(model="m")))
    assert answer.grounded is False and llm.calls == []
    assert answer.text == "文档中没有找到这个问题的答案。"
    assert "exFAT" in answer.refusal_reason


def test_a_supported_answer_is_grounded_and_gives_no_refusal_reason() -> None:
    llm = FakeChatModel()
    answer = asyncio.run(_pipeline(llm, 3).answer("粘滞位保护目录中的什么？", AskOptions(model="m")))
    assert answer.grounded and answer.refusal_reason == "" and len(llm.calls) == 1
    assert answer.checked is not None and answer.checked.answer_supported
