"""Dates a question speaks of, resolved against today in the asker's time zone, in Chinese and English.

Three sources, each for what it does best:

* **Microsoft Recognizers-Text** (``recognizers-text-date-time``) finds and resolves days: 今天/明天/昨天/前天/
  后天, 上周五/下周一/这周三, 3天后/两周后, "last Friday", "in 3 days", explicit dates in both languages
  (2026年3月5日, 3月5号, 2026-03-05, March 5, 2026) and weeks (本周, "next week").
* **Our own rules** for months, quarters and years (本月/上个月/下个季度/今年/去年, "next month", "last
  quarter"): the recognizer has no Chinese quarters and gets month arithmetic wrong at month ends ("last month"
  on the 31st), and a period is plain calendar arithmetic.
* **lunar-python** for the named days of the Chinese calendar (春节, 元宵, 端午, 七夕, 中秋, 重阳; 除夕 is
  the day before 春节; 清明 is a solar term); the fixed ones (元旦, 劳动节, 国庆, 圣诞, "New Year's Day",
  "Christmas") are their month and day. A named day with no year is its next occurrence (today included);
  今年/明年/去年 or a year number before it picks the year.

The recognizer costs milliseconds, so it runs only when a cheap pattern says the question may hold a date.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

ZH_WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class DateSpan:
    """A date or a period the question names: ``start`` to ``end``, both included."""

    text: str  # as the question wrote it
    start: date
    end: date
    position: int  # where in the question it starts

    @property
    def is_day(self) -> bool:
        return self.start == self.end


def format_day(day: date, language: str) -> str:
    if language == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{EN_MONTHS[day.month - 1]} {day.day}, {day.year}"


def format_weekday(day: date, language: str) -> str:
    return (ZH_WEEKDAYS if language == "zh" else EN_WEEKDAYS)[day.weekday()]


def format_span(span: DateSpan, language: str) -> str:
    if span.is_day:
        return format_day(span.start, language)
    joiner = "至" if language == "zh" else " to "
    return f"{format_day(span.start, language)}{joiner}{format_day(span.end, language)}"


# Periods: months, quarters, years.


def _month_start(year: int, month: int, offset: int) -> date:
    index = year * 12 + (month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def month_span(today: date, offset: int) -> tuple[date, date]:
    start = _month_start(today.year, today.month, offset)
    return start, _month_start(start.year, start.month, 1) - timedelta(days=1)


def quarter_span(today: date, offset: int) -> tuple[date, date]:
    first_month = (today.month - 1) // 3 * 3 + 1
    start = _month_start(today.year, first_month, 3 * offset)
    return start, _month_start(start.year, start.month, 3) - timedelta(days=1)


def year_span(today: date, offset: int) -> tuple[date, date]:
    return date(today.year + offset, 1, 1), date(today.year + offset, 12, 31)


_ZH_RELATIVE = {"本": 0, "这": 0, "这个": 0, "当": 0, "上": -1, "上个": -1, "下": 1, "下个": 1}
_ZH_YEARS = {"今年": 0, "本年": 0, "去年": -1, "前年": -2, "明年": 1, "后年": 2}
_EN_RELATIVE = {"this": 0, "current": 0, "last": -1, "previous": -1, "past": -1, "next": 1, "coming": 1}
_ZH_PERIOD = re.compile(r"(本|这个?|当|上个?|下个?)(月|季度)(?!份?[0-9一二三四五六七八九十])")
_ZH_YEAR = re.compile(r"(今年|本年|去年|前年|明年|后年)(?!\d|[一二三四五六七八九十]+月)")
_EN_PERIOD = re.compile(r"\b(this|current|last|previous|past|next|coming)\s+(month|quarter|year)\b", re.I)


def _periods(question: str, today: date) -> Iterable[DateSpan]:
    spans: dict[str, Callable[[date, int], tuple[date, date]]] = {
        "月": month_span,
        "季度": quarter_span,
        "month": month_span,
        "quarter": quarter_span,
        "year": year_span,
    }
    for found in _ZH_PERIOD.finditer(question):
        start, end = spans[found.group(2)](today, _ZH_RELATIVE[found.group(1)])
        yield DateSpan(found.group(0), start, end, found.start())
    for found in _ZH_YEAR.finditer(question):
        start, end = year_span(today, _ZH_YEARS[found.group(1)])
        yield DateSpan(found.group(0), start, end, found.start())
    for found in _EN_PERIOD.finditer(question):
        start, end = spans[found.group(2).lower()](today, _EN_RELATIVE[found.group(1).lower()])
        yield DateSpan(found.group(0), start, end, found.start())


# Offsets the recognizer misses ("再过100天") and the ends of periods (年底, 月底, "the end of the year").

_ZH_AFTER = re.compile(r"再过\s*(\d+|[一二两三四五六七八九十百]+)\s*个?(天|周|星期|礼拜|月|年)")
_ZH_END = re.compile(r"(今年|明年|去年)?(年底|年末)|(这个|本|下个|上个|下|上)?(月底|月末)")
_EN_END = re.compile(r"\bend\s+of\s+(?:the\s+|this\s+)?(year|month)\b", re.I)


def add_months(day: date, months: int) -> date:
    start = _month_start(day.year, day.month, months)
    last = _month_start(start.year, start.month, 1) - timedelta(days=1)
    return start.replace(day=min(day.day, last.day))


def _count(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    from app.rag.facts.calculator import chinese_numeral

    value = chinese_numeral(text)
    return int(value) if value is not None and value == value.to_integral_value() else None


def _offsets_and_ends(question: str, today: date) -> Iterable[DateSpan]:
    for found in _ZH_AFTER.finditer(question):
        count = _count(found.group(1))
        if count is None or count > 100_000:
            continue
        unit = found.group(2)
        if unit == "天":
            day = today + timedelta(days=count)
        elif unit in ("周", "星期", "礼拜"):
            day = today + timedelta(weeks=count)
        else:
            day = add_months(today, count * (12 if unit == "年" else 1))
        yield DateSpan(found.group(0), day, day, found.start())
    for found in _ZH_END.finditer(question):
        if found.group(2):
            day = date(today.year + _ZH_YEARS.get(found.group(1) or "今年", 0), 12, 31)
        else:
            offset = {"下个": 1, "下": 1, "上个": -1, "上": -1}.get(found.group(3) or "", 0)
            day = month_span(today, offset)[1]
        yield DateSpan(found.group(0), day, day, found.start())
    for found in _EN_END.finditer(question):
        day = date(today.year, 12, 31) if found.group(1).lower() == "year" else month_span(today, 0)[1]
        yield DateSpan(found.group(0), day, day, found.start())


# Named days.


def _lunar(month: int, day: int) -> Callable[[int], date]:
    def on(year: int) -> date:
        from lunar_python import Lunar

        solar = Lunar.fromYmd(year, month, day).getSolar()
        return date(solar.getYear(), solar.getMonth(), solar.getDay())

    return on


def _fixed(month: int, day: int) -> Callable[[int], date]:
    return lambda year: date(year, month, day)


def _qingming(year: int) -> date:
    from lunar_python import Lunar

    # The solar terms of lunar year ``year`` run from the winter before to the winter after: 清明 is in April.
    solar = Lunar.fromYmd(year, 1, 1).getJieQiTable()["清明"]
    return date(solar.getYear(), solar.getMonth(), solar.getDay())


def _new_years_eve(year: int) -> date:
    return _lunar(1, 1)(year) - timedelta(days=1)


_NAMED_DAYS: dict[str, Callable[[int], date]] = {
    "元旦": _fixed(1, 1),
    "春节": _lunar(1, 1),
    "除夕": _new_years_eve,
    "元宵": _lunar(1, 15),
    "清明": _qingming,
    "劳动节": _fixed(5, 1),
    "五一": _fixed(5, 1),
    "端午": _lunar(5, 5),
    "七夕": _lunar(7, 7),
    "中秋": _lunar(8, 15),
    "重阳": _lunar(9, 9),
    "国庆": _fixed(10, 1),
    "圣诞": _fixed(12, 25),
    "new year's day": _fixed(1, 1),
    "new year's eve": _fixed(12, 31),
    "christmas eve": _fixed(12, 24),
    "christmas": _fixed(12, 25),
    "chinese new year": _lunar(1, 1),
    "spring festival": _lunar(1, 1),
    "lantern festival": _lunar(1, 15),
    "qingming festival": _qingming,
    "labour day": _fixed(5, 1),
    "labor day": _fixed(5, 1),
    "dragon boat festival": _lunar(5, 5),
    "mid-autumn festival": _lunar(8, 15),
    "national day": _fixed(10, 1),
}
_ZH_NAMED = re.compile(
    r"(?:(今年|本年|去年|前年|明年|后年)的?|(\d{4})年的?)?"
    r"(元旦|春节|除夕|元宵|清明|劳动节|五一|端午|七夕|中秋|重阳|国庆|圣诞)(?:节|假期|当天)?"
)
_EN_NAMED = re.compile(
    r"\b(?:(this|next|last)\s+(?:year's\s+)?)?"
    r"(new\s+year'?s(?:\s+day|\s+eve)?|christmas(?:\s+eve|\s+day)?|chinese\s+new\s+year|spring\s+festival|"
    r"lantern\s+festival|qingming(?:\s+festival)?|labou?r\s+day|dragon\s+boat\s+festival|"
    r"mid-autumn\s+festival|national\s+day)"
    r"(?:\s+(?:of\s+|in\s+)?(\d{4})|\s+(this|next|last)\s+year)?",
    re.I,
)


def _named_key(text: str) -> str:
    key = (
        re.sub(r"\s+", " ", text.lower())
        .replace("new years", "new year's")
        .replace("christmas day", "christmas")
    )
    if key == "new year's":
        key = "new year's day"
    if key == "qingming":
        key = "qingming festival"
    return key.replace("labor day", "labour day")


def _next_occurrence(on: Callable[[int], date], today: date) -> date:
    this_year = on(today.year)
    return this_year if this_year >= today else on(today.year + 1)


def _named_days(question: str, today: date) -> Iterable[DateSpan]:
    for found in _ZH_NAMED.finditer(question):
        on = _NAMED_DAYS[found.group(3)]
        if found.group(1):
            day = on(today.year + _ZH_YEARS[found.group(1)])
        elif found.group(2):
            day = on(int(found.group(2)))
        else:
            day = _next_occurrence(on, today)
        yield DateSpan(found.group(0), day, day, found.start())
    for found in _EN_NAMED.finditer(question):
        on = _NAMED_DAYS[_named_key(found.group(2))]
        which = (found.group(1) or "").lower()
        year_offset = {"this": 0, "next": 1, "last": -1}.get((found.group(4) or "").lower())
        if found.group(3):
            day = on(int(found.group(3)))
        elif year_offset is not None:
            day = on(today.year + year_offset)
        elif which == "this":
            day = on(today.year)
        elif which == "last":
            day = on(today.year) if on(today.year) < today else on(today.year - 1)
        else:
            day = _next_occurrence(on, today)
        yield DateSpan(found.group(0), day, day, found.start())


# The recognizer.

_ZH_HINT = re.compile(
    r"今天|今日|明天|明日|昨天|昨日|前天|后天|[上下本这]个?(?:周|星期|礼拜)|[周礼拜星期][一二三四五六日天]|"
    r"\d+\s*个?(?:天|日|周|星期|礼拜|月|年)(?:后|前|以后|以前|之后|之前)|"
    r"[一二两三四五六七八九十百]+\s*个?(?:天|周|星期|礼拜|月|年)(?:后|前|以后|以前|之后|之前)|"
    r"\d{1,2}\s*月\s*\d{1,2}\s*[日号]|\d{4}\s*[-/.年]\s*\d{1,2}"
)
_EN_HINT = re.compile(
    r"\b(?:today|tonight|tomorrow|yesterday|ago|from now|weeks?|weekend|fortnight|days?|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|"
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}\b|"
    r"\d{1,2}(?:st|nd|rd|th)?\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*)\b|"
    r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b",
    re.I,
)
_WEEK = re.compile(r"^(?:[上下本这]个?(?:周|星期|礼拜)|(?:this|last|next|previous|coming)\s+week)$", re.I)
_CJK = re.compile(r"[\u3400-\u9fff]")


class _Recognizers:
    """Built once, on first use (about a second): one model per language. Parsing is pure Python and keeps
    no state between calls; the lock only guards building."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model(self, language: str) -> Any:
        if language not in self._models:
            with self._lock:
                if language not in self._models:
                    from recognizers_date_time import DateTimeRecognizer
                    from recognizers_text import Culture

                    culture = Culture.Chinese if language == "zh" else Culture.English
                    self._models[language] = DateTimeRecognizer(culture).get_datetime_model()
        return self._models[language]


RECOGNIZERS = _Recognizers()


def _pick(values: list[dict[str, Any]], today: date) -> dict[str, Any]:
    """A date with no year comes as last and next occurrence: this year's is meant ("3月5号的会议")."""
    for value in values:
        if str(value.get("value") or value.get("start", ""))[:4] == str(today.year):
            return value
    return values[0]


def _recognized(question: str, now: datetime) -> Iterable[DateSpan]:
    language = "zh" if _CJK.search(question) else "en"
    hint = _ZH_HINT if language == "zh" else _EN_HINT
    # Chinese questions may write English dates ("2026-03-05"), so a Chinese question tries both hints.
    if not hint.search(question) and not (language == "zh" and _EN_HINT.search(question)):
        return
    today = now.date()
    for result in RECOGNIZERS.model(language).parse(question, now.replace(tzinfo=None)):
        values = [v for v in (result.resolution or {}).get("values", []) if isinstance(v, dict)]
        if result.type_name == "datetimeV2.date" and values:
            value = _pick(values, today)
            try:
                day = date.fromisoformat(str(value.get("value"))[:10])
            except ValueError:
                continue
            yield DateSpan(question[result.start : result.end + 1], day, day, int(result.start))
        elif result.type_name == "datetimeV2.daterange" and values:
            span = _range(question, result, values, today)
            if span is not None:
                yield span


_POINT_WORDS = re.compile(r"^(?:since|until|till|before|after|from|by|to)\s+", re.I)


def _range(question: str, result: Any, values: list[dict[str, Any]], today: date) -> DateSpan | None:
    """A week (本周, "next week"); a day named with since/until/before ("until March 5" is March 5); or the
    days between two named days (从上周五到现在)."""
    text = question[result.start : result.end + 1]
    value = _pick(values, today)
    try:
        if value.get("sourceEntity") == "datetimepoint":
            point = date.fromisoformat(str(value.get("start") or value.get("end"))[:10])
            words = _POINT_WORDS.match(text)
            skipped = words.end() if words else 0
            return DateSpan(text[skipped:], point, point, int(result.start) + skipped)
        start = date.fromisoformat(str(value.get("start"))[:10])
        end = date.fromisoformat(str(value.get("end"))[:10])
    except ValueError:
        return None
    if _WEEK.match(text.strip()):
        return DateSpan(text, start, end - timedelta(days=1), int(result.start))  # a week's end is exclusive
    if str(value.get("timex", "")).startswith("("):  # "(2026-12-02,2026-11-27,P-5D)": from one day to another
        return DateSpan(text, min(start, end), max(start, end), int(result.start))
    return None


def resolve_dates(question: str, now: datetime) -> list[DateSpan]:
    """Every date and period in ``question``, in order, resolved for ``now`` (the asker's wall-clock time).
    Blocking (the recognizer takes milliseconds): call off the event loop."""
    today = now.date()
    ours = sorted(
        [*_named_days(question, today), *_offsets_and_ends(question, today), *_periods(question, today)],
        key=lambda s: s.position,
    )
    found: list[DateSpan] = []
    for span in [*ours, *_recognized(question, now)]:
        # A named day or period wins over what the recognizer read in the same words (it reads 今年 as the year
        # to date, for one); the first of two overlapping spans of our own wins too.
        end = span.position + len(span.text)
        if any(span.position < f.position + len(f.text) and f.position < end for f in found):
            continue
        if date(1900, 1, 1) <= span.start <= span.end <= date(2200, 12, 31):
            found.append(span)
    return sorted(found, key=lambda s: s.position)
