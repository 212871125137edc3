"""The answer read against the facts: contradicting dates, weekdays, day counts and results are corrected when
there is one thing to correct, flagged otherwise; everything else is left as the model wrote it."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from app.rag.citations import Passage
from app.rag.facts.clock import FixedClock
from app.rag.facts.layer import FactFindings, FactLayer
from app.rag.facts.postcheck import FactVerdict, check_facts

LAYER = FactLayer(clock=FixedClock(datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))))


def findings(question: str, language: str) -> tuple[FactFindings, list[Passage]]:
    found = asyncio.run(LAYER.gather(question, language))
    return found, [Passage(number=n, evidence=f) for n, f in enumerate(found.facts, start=1)]


def check(question: str, language: str, answer: str) -> tuple[str, FactVerdict, list[tuple[str, str, str]]]:
    found, passages = findings(question, language)
    text, verdict = check_facts(answer, found, passages, language)
    return text, verdict.verdict, [(i.wrote, i.expected, i.action) for i in verdict.issues]


def test_a_right_answer_is_left_alone() -> None:
    assert check("今天是几号？", "zh", "今天是2026年12月2日 [1]。") == (
        "今天是2026年12月2日 [1]。",
        FactVerdict.CONSISTENT,
        [],
    )


def test_wrong_dates_weekdays_and_counts_are_corrected() -> None:
    assert check("今天是几号？", "zh", "今天是2025年6月1日 [1]。") == (
        "今天是2026年12月2日 [1]。",
        FactVerdict.CORRECTED,
        [("2025年6月1日", "2026年12月2日", "corrected")],
    )
    text, verdict, _ = check("今天星期几？", "zh", "今天是星期五 [1]。")
    assert (text, verdict) == ("今天是星期三 [1]。", FactVerdict.CORRECTED)
    text, verdict, _ = check("距离明年元旦还有多少天？", "zh", "距离明年元旦还有31天 [2]。")
    assert (text, verdict) == ("距离明年元旦还有30天 [2]。", FactVerdict.CORRECTED)
    text, verdict, _ = check("How many days until Christmas?", "en", "There are 24 days left [2].")
    assert (text, verdict) == ("There are 23 days left [2].", FactVerdict.CORRECTED)


def test_a_wrong_date_for_today_without_a_marker_is_corrected_too() -> None:
    text, verdict, _ = check("What is today's date?", "en", "Today is 2026-12-05.")
    assert (text, verdict) == ("Today is December 2, 2026.", FactVerdict.CORRECTED)


def test_a_wrong_sum_is_corrected_and_its_operands_are_kept() -> None:
    text, verdict, issues = check("3.5万加上12800是多少？", "zh", "35000加上12800等于48700 [1]。")
    assert (text, verdict, issues) == (
        "35000加上12800等于47800 [1]。",
        FactVerdict.CORRECTED,
        [("48700", "47800", "corrected")],
    )


def test_two_wrong_values_are_flagged_not_guessed() -> None:
    text, verdict, issues = check("3.5万加上12800是多少？", "zh", "结果是48700或49000 [1]。")
    assert text == "结果是48700或49000 [1]。" and verdict is FactVerdict.FLAGGED
    assert [action for *_, action in issues] == ["flagged", "flagged"]


def test_no_facts_nothing_to_check() -> None:
    assert check("怎样配置静态 IP 地址？", "zh", "编辑 /etc/network/interfaces [1]。")[1] is FactVerdict.NONE


def test_sentences_citing_documents_are_not_touched() -> None:
    found, passages = findings("上周五的会议纪要说了什么？", "zh")
    answer = "会议定于2026年12月15日发布新版本 [2]。"  # passage 2 would be a document: no fact cited
    text, verdict = check_facts(answer, found, passages, "zh")
    assert (text, verdict.verdict) == (answer, FactVerdict.CONSISTENT)


def test_a_wrong_conversion_is_corrected() -> None:
    text, verdict, issues = check("5公里是多少英里？", "zh", "5公里约等于3.5英里 [1]。")
    assert (text, verdict, issues) == (
        "5公里约等于3.1069英里 [1]。",
        FactVerdict.CORRECTED,
        [("3.5", "3.1069", "corrected")],
    )


def test_a_miscopied_date_in_a_day_count_is_put_right() -> None:
    answer = "Days from today (December 2, 2026) until December 25, 2027 is 23 days [2]."
    text, verdict, issues = check("How many days until Christmas?", "en", answer)
    assert text == "Days from today (December 2, 2026) until December 25, 2026 is 23 days [2]."
    assert (verdict, issues) == (FactVerdict.CORRECTED, [("December 25, 2027", "December 25, 2026", "corrected")])


def test_a_sentence_restating_the_operands_is_held_to_the_result_whatever_it_cites() -> None:
    found, passages = findings("1.2亿除以3是多少？", "zh")
    text, verdict = check_facts("1.2亿除以3等于4000000 [2]。", found, passages, "zh")
    assert (text, verdict.verdict) == ("1.2亿除以3等于40000000 [2]。", FactVerdict.CORRECTED)
