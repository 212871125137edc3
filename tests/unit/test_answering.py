"""The answer flow on fakes: packing, refusals with their reasons, every kind of evidence, and the record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from app.components import prompts_directory
from app.config import Settings
from app.rag.answering import Answer, AnswerFlow, AnswerRequest
from app.rag.evidence import Correction, DocumentSpan, EvidenceKind, Fact
from app.rag.facts.clock import FixedClock
from app.rag.facts.layer import FactFindings, FactLayer
from app.rag.facts.postcheck import FactVerdict
from app.rag.llm import GenerationParams
from app.rag.prompts import PromptLibrary
from app.rag.refusal import RefusalPolicy, RefusalReason
from app.rag.types import AnswerStatus
from tests.fakes import FakeChatModel, ScriptedChatModel

TEXT = "粘滞位保护目录中的文件不被其他用户删除。" * 4
PROMPTS = PromptLibrary(prompts_directory(Settings()))


NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Wednesday

def _chunks(count: int, text: str = TEXT) -> list[DocumentSpan]:
    return [
        DocumentSpan(
            chunk_id=i, document_id=1, source="a.txt", text=f"第{i}段。{text}", score=1.0, start=0, end=0
        )
        for i in range(1, count + 1)
    ]


class StaticEvidence:
    """A fake fact or correction source."""

    def __init__(self, *items: Fact | Correction) -> None:
        self.items = items

    async def evidence_for(self, question: str, language: str) -> Sequence[Fact | Correction]:
        return self.items


def _flow(
    llm: FakeChatModel,
    count: int,
    *,
    sources: Sequence[StaticEvidence] = (),
    records: list[Answer] | None = None,
    text: str = TEXT,
    policy: RefusalPolicy | None = None,
) -> AnswerFlow:
    async def retrieve(question: str, top_k: int) -> list[DocumentSpan]:
        return _chunks(min(count, top_k), text)

    return AnswerFlow(
        llm=llm,
        prompts=PROMPTS,
        retrieve=retrieve,
        policy=policy or RefusalPolicy(),
        sources=sources,
        record=(records.append if records is not None else lambda _answer: None),
        facts=FactLayer(clock=FixedClock(NOW)),
    )


def _ask(flow: AnswerFlow, question: str, **request: object) -> Answer:
    return asyncio.run(flow.answer(AnswerRequest(question=question, **request)))  # type: ignore[arg-type]


def test_passages_that_do_not_fit_the_window_are_dropped_and_reported() -> None:
    roomy = _ask(_flow(FakeChatModel(window=8000), 5), "粘滞位有什么作用？")
    assert (roomy.passages_used, roomy.passages_dropped) == (5, 0)
    # A window that holds the instructions, the examples and about two passages beside max_tokens.
    tight_llm = FakeChatModel(window=1)
    no_facts = FactFindings((), "粘滞位有什么作用？", FactLayer().calendar())
    messages = _flow(tight_llm, 0)._messages("qa", "zh", "粘滞位有什么作用？", [], (), no_facts)
    base = asyncio.run(tight_llm.count_tokens(messages, "m"))
    per_passage = len(_chunks(1)[0].text) // 2 + 12
    tight_llm.window = base + 2 * per_passage + 100 + 16
    tight = _ask(_flow(tight_llm, 5), "粘滞位有什么作用？", params=GenerationParams(max_tokens=100))
    assert 1 <= tight.passages_used < 5 and tight.passages_used + tight.passages_dropped == 5
    assert asyncio.run(tight_llm.count_tokens(tight_llm.calls[-1], "m")) + 100 + 16 <= tight_llm.window


def test_no_room_for_any_passage_means_no_generation_and_a_refusal() -> None:
    llm = FakeChatModel(window=50)
    answer = _ask(_flow(llm, 3), "粘滞位有什么作用？")
    assert answer.passages_used == 0 and answer.grounded is False
    assert answer.text == "文档中没有找到这个问题的答案。" and llm.calls == []
    assert answer.refusal is not None and answer.refusal.reason is RefusalReason.NO_ROOM


def test_nothing_retrieved_is_refused_without_calling_the_model() -> None:
    llm = FakeChatModel()
    answer = _ask(_flow(llm, 0), "What is a sticky bit?")
    assert answer.grounded is False and llm.calls == []
    assert answer.text == "The documents do not contain the answer to this question."
    assert answer.refusal is not None and answer.refusal.reason is RefusalReason.NO_PASSAGES


def test_a_question_naming_what_no_passage_mentions_is_refused_without_calling_the_model() -> None:
    llm = FakeChatModel()
    answer = _ask(_flow(llm, 3), "exFAT 的粘滞位有什么作用？")
    assert answer.grounded is False and llm.calls == []
    assert answer.text == "文档中没有找到这个问题的答案。"
    assert answer.refusal is not None and answer.refusal.reason is RefusalReason.UNMENTIONED_NAME
    assert "exFAT" in answer.refusal.detail


def test_the_name_check_is_a_setting() -> None:
    llm = FakeChatModel()
    _ask(_flow(llm, 3, policy=RefusalPolicy(refuse_unmentioned_names=False)), "exFAT 的粘滞位有什么作用？")
    assert len(llm.calls) == 1


def test_a_supported_answer_is_grounded_and_gives_no_refusal() -> None:
    llm = FakeChatModel()
    answer = _ask(_flow(llm, 3), "粘滞位保护目录中的什么？")
    assert answer.grounded and answer.refusal is None and len(llm.calls) == 1
    assert answer.status is AnswerStatus.ANSWERED
    assert answer.checked is not None and answer.checked.answer_supported
    citation = answer.checked.citations[0]
    assert citation.kind is EvidenceKind.DOCUMENT and citation.chunk_id == 1


def test_an_answer_resting_on_a_fact_cites_the_fact_and_its_source() -> None:
    llm = ScriptedChatModel("Today is December 2, 2026 [1].")
    answer = _ask(_flow(llm, 2, text="Meetings are held on Fridays."), "What is today's date?")
    assert answer.grounded, answer.raw_answer
    assert answer.checked is not None
    (citation,) = answer.checked.citations
    assert (citation.kind, citation.quote, citation.source, citation.name) == (
        EvidenceKind.FACT,
        "December 2, 2026",
        "clock",
        "today's date (Asia/Shanghai)",
    )
    # The fact is passage [1] in the prompt, marked as a fact with its source; the system prompt has today too.
    assert "[1] Fact (source: clock)\nToday's date (Asia/Shanghai) is December 2, 2026." in llm.calls[-1][-1].content
    assert "Today is Wednesday, December 2, 2026 (Asia/Shanghai)." in llm.calls[-1][0].content
    assert answer.fact_check.verdict is FactVerdict.CONSISTENT


def test_a_wrong_date_for_today_is_corrected_to_the_clock() -> None:
    llm = ScriptedChatModel("Today is December 3, 2026 [1].")
    answer = _ask(_flow(llm, 0), "What is today's date?")
    assert answer.grounded and answer.text == "Today is December 2, 2026 [1]."
    assert answer.raw_answer == "Today is December 3, 2026 [1]."
    (issue,) = answer.fact_check.issues
    assert (answer.fact_check.verdict, issue.wrote, issue.expected, issue.action) == (
        FactVerdict.CORRECTED,
        "December 3, 2026",
        "December 2, 2026",
        "corrected",
    )


def test_a_contradiction_that_cannot_be_corrected_is_flagged_and_unsupported() -> None:
    llm = ScriptedChatModel("Today is December 3, 2026 or December 4, 2026 [1].")
    answer = _ask(_flow(llm, 0), "What is today's date?")
    assert answer.fact_check.verdict is FactVerdict.FLAGGED and len(answer.fact_check.issues) == 2
    assert not answer.grounded
    assert answer.refusal is not None and answer.refusal.reason is RefusalReason.UNSUPPORTED


def test_a_static_fact_source_is_still_evidence() -> None:
    weather = Fact(name="weather in Shanghai", value="sunny, 12 °C", source="tool:weather")
    llm = ScriptedChatModel("It is sunny, 12 °C [1].")
    answer = _ask(_flow(llm, 0, sources=[StaticEvidence(weather)]), "How is the weather in Shanghai?")
    assert answer.grounded, answer.raw_answer
    assert answer.checked is not None and answer.checked.citations[0].source == "tool:weather"


def test_an_answer_resting_on_a_correction_quotes_the_correction() -> None:
    correction = Correction(
        feedback_id=7,
        text="新用户的默认 umask 是 0002，由 /etc/login.defs 设置。",
        question="新用户的默认 umask 是多少？",
    )
    llm = ScriptedChatModel("新用户的默认 umask 是 0002 [1]。")
    answer = _ask(_flow(llm, 2, sources=[StaticEvidence(correction)]), "新用户的默认 umask 是多少？")
    assert answer.grounded, answer.raw_answer
    assert answer.checked is not None
    (citation,) = answer.checked.citations
    assert citation.kind is EvidenceKind.CORRECTION and citation.feedback_id == 7
    assert correction.text[citation.start : citation.end] == citation.quote and "0002" in citation.quote
    assert "[1] 已核实的更正（feedback 7）" in llm.calls[-1][-1].content


def test_every_answer_is_handed_to_the_recorder_with_its_evidence_and_messages() -> None:
    records: list[Answer] = []
    answer = _ask(_flow(FakeChatModel(), 3, records=records), "粘滞位保护目录中的什么？")
    assert records == [answer]
    assert len(answer.evidence) == 3 and answer.messages[-1].role == "user"
    assert answer.template == "qa" and len(answer.template_version) == 64

    refused: list[Answer] = []
    _ask(_flow(FakeChatModel(), 0, records=refused), "What is a sticky bit?")
    assert [r.status for r in refused] == [AnswerStatus.REFUSED]


def test_a_stream_closed_early_is_recorded_as_cancelled_and_stops_the_model() -> None:
    records: list[Answer] = []
    llm = ScriptedChatModel("粘滞位保护目录中的文件不被其他用户删除 [1]。" * 3)
    flow = _flow(llm, 3, records=records)

    async def read_two_deltas() -> None:
        prepared = await flow.prepare(AnswerRequest(question="粘滞位保护目录中的什么？"))
        events = flow.stream(prepared)
        await anext(events)
        await anext(events)
        await events.aclose()

    asyncio.run(read_two_deltas())
    assert [r.status for r in records] == [AnswerStatus.CANCELLED]
    assert records[0].raw_answer == "粘滞位保护目录中"
    assert llm.cancelled
