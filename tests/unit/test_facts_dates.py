"""Dates in questions, resolved with a frozen clock: every supported expression in both languages, across time
zones, month and year ends, leap years, DST and the lunar new year."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.rag.errors import InvalidInputError
from app.rag.facts.clock import FixedClock, zone
from app.rag.facts.dates import resolve_dates
from app.rag.facts.layer import FactLayer

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEDNESDAY = datetime(2026, 12, 2, 10, 0, tzinfo=SHANGHAI)


def spans(question: str, now: datetime = WEDNESDAY) -> list[tuple[str, str, str]]:
    return [(s.text, s.start.isoformat(), s.end.isoformat()) for s in resolve_dates(question, now)]


def day(question: str, now: datetime = WEDNESDAY) -> str:
    found = resolve_dates(question, now)
    assert len(found) == 1 and found[0].is_day, (question, found)
    return found[0].start.isoformat()


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("今天是几号？", "2026-12-02"),
        ("明天开会吗", "2026-12-03"),
        ("昨天的日报", "2026-12-01"),
        ("前天的日报", "2026-11-30"),
        ("后天交付", "2026-12-04"),
        ("上周五的会议纪要说了什么？", "2026-11-27"),
        ("下周一的安排", "2026-12-07"),
        ("这周三的会", "2026-12-02"),
        ("3天后是几号", "2026-12-05"),
        ("三天前的邮件", "2026-11-29"),
        ("两周后是几号", "2026-12-16"),
        ("2026年3月5日发生了什么", "2026-03-05"),
        ("3月5号的会议", "2026-03-05"),
        ("2026-03-05 的记录", "2026-03-05"),
        ("2026/3/5 的记录", "2026-03-05"),
        ("What is today's date?", "2026-12-02"),
        ("Is the review tomorrow?", "2026-12-03"),
        ("What happened yesterday?", "2026-12-01"),
        ("What is due the day after tomorrow?", "2026-12-04"),
        ("What did last Friday's minutes say?", "2026-11-27"),
        ("What is planned for next Monday?", "2026-12-07"),
        ("What date is it in 3 days?", "2026-12-05"),
        ("What was decided 3 days ago?", "2026-11-29"),
        ("What is due two weeks from now?", "2026-12-16"),
        ("What happened on March 5, 2026?", "2026-03-05"),
        ("What happened on 5 March 2026?", "2026-03-05"),
        ("What happened on 2026-03-05?", "2026-03-05"),
        ("再过100天是几月几号？", "2027-03-12"),
        ("再过两周是几号", "2026-12-16"),
        ("再过3个月是几号", "2027-03-02"),
        ("距离年底还有多少天？", "2026-12-31"),
        ("明年年底", "2027-12-31"),
        ("下个月底是几号", "2027-01-31"),
        ("上月底的报告", "2026-11-30"),
        ("How many days until the end of the year?", "2026-12-31"),
        ("What is due at the end of the month?", "2026-12-31"),
    ],
)
def test_days(question: str, expected: str) -> None:
    assert day(question) == expected


@pytest.mark.parametrize(
    ("question", "start", "end"),
    [
        ("本月的报告", "2026-12-01", "2026-12-31"),
        ("上个月的报告", "2026-11-01", "2026-11-30"),
        ("下个月的计划", "2027-01-01", "2027-01-31"),
        ("本季度的目标", "2026-10-01", "2026-12-31"),
        ("下个季度的预算", "2027-01-01", "2027-03-31"),
        ("上季度的收入", "2026-07-01", "2026-09-30"),
        ("今年的营收", "2026-01-01", "2026-12-31"),
        ("去年的营收", "2025-01-01", "2025-12-31"),
        ("明年的计划", "2027-01-01", "2027-12-31"),
        ("本周的值班", "2026-11-30", "2026-12-06"),
        ("What is the plan for next month?", "2027-01-01", "2027-01-31"),
        ("What happened last month?", "2026-11-01", "2026-11-30"),
        ("What is the target for next quarter?", "2027-01-01", "2027-03-31"),
        ("What was revenue last year?", "2025-01-01", "2025-12-31"),
        ("Who is on call this week?", "2026-11-30", "2026-12-06"),
    ],
)
def test_periods(question: str, start: str, end: str) -> None:
    (span,) = resolve_dates(question, WEDNESDAY)
    assert (span.start.isoformat(), span.end.isoformat()) == (start, end)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("距离明年元旦还有多少天？", "2027-01-01"),
        ("元旦放假吗", "2027-01-01"),  # this year's is past: the next one
        ("今年春节是哪天", "2026-02-17"),
        ("春节是哪天", "2027-02-06"),
        ("明年春节是哪天", "2027-02-06"),
        ("除夕几号", "2027-02-05"),
        ("明年元宵节", "2027-02-20"),
        ("明年清明节", "2027-04-05"),
        ("明年端午节", "2027-06-09"),
        ("2028年端午节", "2028-05-28"),  # a year with a leap month
        ("明年中秋节", "2027-09-15"),
        ("明年国庆节", "2027-10-01"),
        ("劳动节", "2027-05-01"),
        ("How many days until New Year's Day?", "2027-01-01"),
        ("When is Christmas?", "2026-12-25"),
        ("When is Chinese New Year?", "2027-02-06"),
        ("When was the Mid-Autumn Festival this year?", "2026-09-25"),
    ],
)
def test_named_days(question: str, expected: str) -> None:
    assert day(question) == expected


def test_month_ends_and_leap_years() -> None:
    end_of_january = datetime(2027, 1, 31, 12, 0, tzinfo=SHANGHAI)
    assert spans("下个月的计划", end_of_january) == [("下个月", "2027-02-01", "2027-02-28")]
    assert spans("What happened last month?", datetime(2026, 3, 31, 12, tzinfo=SHANGHAI)) == [
        ("last month", "2026-02-01", "2026-02-28")
    ]
    leap_day = datetime(2024, 2, 29, 12, 0, tzinfo=SHANGHAI)
    assert day("明天", leap_day) == "2024-03-01"
    assert day("昨天", datetime(2024, 3, 1, 9, tzinfo=SHANGHAI)) == "2024-02-29"
    assert spans("本月的报告", leap_day) == [("本月", "2024-02-01", "2024-02-29")]
    assert spans("去年的营收", leap_day) == [("去年", "2023-01-01", "2023-12-31")]
    new_years_eve = datetime(2026, 12, 31, 23, 30, tzinfo=SHANGHAI)
    assert day("明天", new_years_eve) == "2027-01-01"
    assert spans("下个季度的预算", new_years_eve) == [("下个季度", "2027-01-01", "2027-03-31")]
    assert day("What date is it in 3 days?", new_years_eve) == "2027-01-03"


def test_the_lunar_new_year_around_its_day() -> None:
    eve = datetime(2026, 2, 16, 20, 0, tzinfo=SHANGHAI)  # 除夕 2026
    assert day("春节是哪天", eve) == "2026-02-17"
    assert day("除夕是哪天", eve) == "2026-02-16"  # today counts as the next occurrence
    assert day("春节是哪天", datetime(2026, 2, 18, tzinfo=SHANGHAI)) == "2027-02-06"


def test_questions_without_dates_resolve_nothing() -> None:
    for question in [
        "怎样配置静态 IP 地址？",
        "How do I delete a local branch that has not been merged?",
        "What does the sticky bit do on /tmp?",
        "年假有几天？",
    ]:
        assert resolve_dates(question, WEDNESDAY) == [], question


def _today(layer: FactLayer, timezone: str) -> str:
    findings = asyncio.run(layer.gather("今天是几号？", "zh", timezone))
    return findings.facts[0].value


def test_today_depends_on_the_time_zone() -> None:
    # 2026-12-01 20:30 UTC: already the 2nd in Shanghai and Tokyo, still the 1st in Berlin and New York.
    layer = FactLayer(clock=FixedClock(datetime(2026, 12, 1, 20, 30, tzinfo=UTC)))
    assert _today(layer, "Asia/Shanghai") == "2026年12月2日"
    assert _today(layer, "Asia/Tokyo") == "2026年12月2日"
    assert _today(layer, "Europe/Berlin") == "2026年12月1日"
    assert _today(layer, "America/New_York") == "2026年12月1日"
    assert _today(layer, "Pacific/Kiritimati") == "2026年12月2日"  # UTC+14


def test_dst_changes_the_day_only_where_the_offset_says() -> None:
    # Europe/Berlin leaves summer time at 01:00 UTC on 2026-10-25: 22:30 UTC is 00:30 (CEST) before the
    # change on the 24th... and 23:30 on the 25th (CET) after it.
    before = FactLayer(clock=FixedClock(datetime(2026, 10, 24, 22, 30, tzinfo=UTC)))
    after = FactLayer(clock=FixedClock(datetime(2026, 10, 25, 22, 30, tzinfo=UTC)))
    assert _today(before, "Europe/Berlin") == "2026年10月25日"
    assert _today(after, "Europe/Berlin") == "2026年10月25日"
    # New York springs forward on 2026-03-08: 04:30 UTC is 23:30 EST on the 7th, a day later 00:30 EDT.
    assert _today(FactLayer(clock=FixedClock(datetime(2026, 3, 8, 4, 30, tzinfo=UTC))), "America/New_York") == (
        "2026年3月7日"
    )
    assert _today(FactLayer(clock=FixedClock(datetime(2026, 3, 9, 4, 30, tzinfo=UTC))), "America/New_York") == (
        "2026年3月9日"
    )


def test_an_unknown_time_zone_is_named() -> None:
    for name in ["Mars/Olympus_Mons", "", "../../etc/passwd", " Asia/Shanghai"]:
        with pytest.raises(InvalidInputError) as raised:
            zone(name)
        assert raised.value.param == "tz" and repr(name) in raised.value.message
    with pytest.raises(InvalidInputError):
        asyncio.run(FactLayer().gather("今天是几号？", "zh", "Mars/Olympus_Mons"))


def test_facts_for_questions_that_need_them() -> None:
    layer = FactLayer(clock=FixedClock(WEDNESDAY))

    def facts(question: str, language: str) -> list[tuple[str, str]]:
        return [(f.name, f.value) for f in asyncio.run(layer.gather(question, language)).facts]

    # What was asked comes first.
    assert facts("今天星期几？", "zh") == [("今天的星期", "星期三"), ("今天的日期（Asia/Shanghai）", "2026年12月2日")]
    assert facts("距离明年元旦还有多少天？", "zh") == [
        ("“明年元旦”的日期", "2027年1月1日"),
        ("从今天（2026年12月2日）到2027年1月1日的天数", "30天"),
    ]
    assert facts("What day of the week is 2027-01-01?", "en") == [
        ("the day of the week of January 1, 2027", "Friday"),
        ('the date of "2027-01-01"', "January 1, 2027"),
    ]
    assert facts("How many days since last Friday?", "en")[-1] == (
        "days from November 27, 2026 to today (December 2, 2026)",
        "5 days",
    )
    assert facts("现在几点了？", "zh") == [("现在的时间（Asia/Shanghai）", "10:00")]
    assert facts("现在是哪一年？", "zh") == [("今年（Asia/Shanghai）", "2026年")]
    assert facts("What year is it?", "en") == [("the current year (Asia/Shanghai)", "2026")]
    assert facts("3万5加上1万2是多少", "zh") == [("35000 + 12000 的计算结果", "47000")]
    assert facts("What is 15% of 200?", "en") == [("the result of 0.15 * 200", "30")]
    assert facts("3.5万加上12800是多少？", "zh") == [("35000 + 12800 的计算结果", "47800")]
    assert facts("怎样配置静态 IP 地址？", "zh") == []
    assert facts("How do I delete a local branch?", "en") == []


def test_resolved_dates_are_written_into_the_retrieval_query() -> None:
    layer = FactLayer(clock=FixedClock(WEDNESDAY))
    findings = asyncio.run(layer.gather("上周五的会议纪要说了什么？", "zh"))
    assert findings.retrieval_query == "上周五（2026年11月27日，2026-11-27）的会议纪要说了什么？"
    english = asyncio.run(layer.gather("What did the minutes of last Friday say?", "en"))
    assert english.retrieval_query == "What did the minutes of last Friday (November 27, 2026, 2026-11-27) say?"
    assert date(2026, 11, 27) in english.days.values()
