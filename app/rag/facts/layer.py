"""What a question needs that no document holds, found before retrieval: today's date in the asker's time zone,
the dates the question names, days between, weekdays, the time of day, arithmetic, and configured tools.

``FactLayer.gather`` reads the question once and returns ``FactFindings``: the facts (evidence the model cites
like a passage), the query retrieval should use (each resolved date written beside its words, so "上周五的会议"
finds a document dated 2026-11-27), the calendar the prompt templates carry at day granularity, and notes on
tools that gave nothing. A question that needs no fact costs a few regular-expression searches.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TypeVar

from app.rag.evidence import Fact
from app.rag.facts.calculator import Calculation, find_calculations
from app.rag.facts.clock import Clock, SystemClock, zone
from app.rag.facts.dates import (
    EN_WEEKDAYS,
    ZH_WEEKDAYS,
    DateSpan,
    format_day,
    format_span,
    format_weekday,
    resolve_dates,
)
from app.rag.facts.tools import ToolBox
from app.rag.facts.units import Conversion, find_conversions

logger = logging.getLogger(__name__)
T = TypeVar("T")

CLOCK = "clock"
CALENDAR = "calendar"
CALCULATOR = "calculator"
WEEKDAYS = frozenset((*ZH_WEEKDAYS, *EN_WEEKDAYS))
UNITS = "units"

# What the question asks for. Each is a few alternatives; none needs the recognizer.
_ASKS_DATE = re.compile(
    r"几号|几月几[日号]|日期|哪天|哪一天|什么日子|今天是|今日是|"
    r"\bwhat(?:'s| is)\s+(?:the\s+)?(?:today's\s+|current\s+)?date\b|\bwhat\s+day\s+is\s+(?:it|today)\b|"
    r"\btoday's\s+date\b|\bwhat\s+is\s+today\b|\bdate\s+(?:today|is\s+it)\b|\bwhich\s+date\b|\bwhat\s+date\b",
    re.I,
)
_ASKS_WEEKDAY = re.compile(
    r"星期几|周几|礼拜几|星期多少|\bday\s+of\s+the\s+week\b|\bwhat\s+day\b|\bwhich\s+day\b|\bweekday\b", re.I
)
_ASKS_YEAR = re.compile(r"哪一年|哪年|今年是|\bwhat\s+year\b|\bwhich\s+year\b|\bcurrent\s+year\b", re.I)
_ASKS_TIME = re.compile(
    r"几点|现在时间|现在的时间|当前时间|北京时间|\bwhat\s+time\b|\bcurrent\s+time\b|\btime\s+is\s+it\b|\btime\s+now\b",
    re.I,
)
_ASKS_DAYS = re.compile(
    r"多少天|几天|多久|\bhow\s+many\s+days\b|\bdays\s+(?:until|till|to|left|since|between|before|remain)|"
    r"\bhow\s+long\s+(?:until|till|before|since)\b",
    re.I,
)
_FROM_TO = re.compile(r"到|至|\bto\b|\buntil\b|\bbetween\b", re.I)
# A cheap gate in front of everything: a question with none of these needs no clock, calendar or sum.
_MAY_NEED_FACTS = re.compile(
    r"[\d零〇一二两三四五六七八九十百千万亿]|今|明|昨|前天|后天|周|星期|礼拜|月|年|季度|元旦|春节|除夕|元宵|清明|"
    r"劳动节|端午|七夕|中秋|重阳|国庆|圣诞|号|日|几|多少|多久|"
    r"\b(?:today|tonight|tomorrow|yesterday|ago|now|week|weekend|month|quarter|year|date|day|days|time|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|christmas|new\s+year|festival|national\s+day|"
    r"labou?r\s+day|sum|total|plus|minus|times|divided|how\s+much|how\s+many|how\s+long|"
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    re.I,
)


@dataclass(frozen=True)
class Calendar:
    """Today where the asker is, as the prompt templates get it (``today``, ``weekday``, ``timezone``): at day
    granularity, so an upstream prefix cache of the system prompt stays warm all day.

    ``shown`` only when the question was given facts: the templates then carry the date, and otherwise get
    empty strings and send the very prompt they sent before wenda knew the date. Carrying it always changed
    the 0.5B model's greedy answers to questions about the documents (2 of the 6 unanswerable questions of the
    English dev set were then answered wrongly and passed the citation check)."""

    today: date
    timezone: str
    shown: bool = True

    def for_template(self, language: str) -> dict[str, str]:
        if not self.shown:
            return {"today": "", "weekday": "", "timezone": ""}
        return {
            "today": format_day(self.today, language),
            "weekday": format_weekday(self.today, language),
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class FactFindings:
    facts: tuple[Fact, ...]
    retrieval_query: str
    calendar: Calendar
    notes: tuple[str, ...] = ()  # tools that were asked and gave nothing, and why
    # Each date fact's day, for checking the answer afterwards (app.rag.facts.postcheck).
    days: dict[str, date] = field(default_factory=dict)


class FactLayer:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        default_timezone: str = "Asia/Shanghai",
        tools: ToolBox | None = None,
        enabled: bool = True,
    ) -> None:
        zone(default_timezone)  # a wrong default fails at start-up, not on the first question
        self._clock = clock or SystemClock()
        self._default_timezone = default_timezone
        self._tools = tools
        self._enabled = enabled

    async def start(self) -> list[str]:
        """List the MCP servers' tools (the server's start-up); notes for those that could not be reached."""
        return await self._tools.start() if self._tools is not None else []

    async def aclose(self) -> None:
        if self._tools is not None:
            await self._tools.aclose()

    @property
    def default_timezone(self) -> str:
        return self._default_timezone

    def check_timezone(self, name: str | None) -> str:
        """The zone a request asked for (or the default); an unknown name is a 422 on ``tz``."""
        chosen = name or self._default_timezone
        zone(chosen)
        return chosen

    def now(self, timezone: str) -> datetime:
        return self._clock.now().astimezone(zone(timezone))

    def calendar(self, timezone: str | None = None) -> Calendar:
        """Today where the asker is, shown to the templates (for a request that has facts)."""
        name = self.check_timezone(timezone)
        return Calendar(self.now(name).date(), name, shown=self._enabled)

    async def gather(self, question: str, language: str, timezone: str | None = None) -> FactFindings:
        name = self.check_timezone(timezone)
        now = self.now(name)
        hidden = Calendar(now.date(), name, shown=False)
        if not self._enabled:  # no clock, no calendar, no tools: documents only
            return FactFindings((), question, hidden)
        tool_facts: list[Fact] = []
        notes: list[str] = []
        if self._tools is not None:
            tool_facts, notes = await self._tools.facts_for(question)
        if not _MAY_NEED_FACTS.search(question):
            calendar = replace(hidden, shown=bool(tool_facts))
            return FactFindings(tuple(tool_facts), question, calendar, notes=tuple(notes))
        # The recognizer takes milliseconds of CPU: off the event loop.
        spans, calculations, conversions = await asyncio.to_thread(_read, question, now)
        facts, days = _calendar_facts(question, language, now, spans)
        facts += [_calculation_fact(c, language) for c in calculations]
        facts += [_conversion_fact(c, language) for c in conversions]
        every_fact = (*facts, *tool_facts)
        return FactFindings(
            facts=every_fact,
            retrieval_query=_with_dates(question, spans, language),
            calendar=replace(hidden, shown=bool(every_fact)),
            notes=tuple(notes),
            days=days,
        )


def _read(question: str, now: datetime) -> tuple[list[DateSpan], list[Calculation], list[Conversion]]:
    """Dates, sums and conversions in the question. A reader that breaks on some input (a library's bug)
    costs that reader's facts, logged, never the answer."""
    return (
        _safely(lambda: resolve_dates(question, now), "dates"),
        _safely(lambda: find_calculations(question), "arithmetic"),
        _safely(lambda: find_conversions(question), "units"),
    )


def _safely(read: Callable[[], list[T]], what: str) -> list[T]:
    try:
        return read()
    except Exception:
        logger.exception("reading %s in a question failed; no such facts for it", what)
        return []


def _calendar_facts(
    question: str, language: str, now: datetime, spans: Sequence[DateSpan]
) -> tuple[list[Fact], dict[str, date]]:
    zh = language == "zh"
    today = now.date()
    timezone = str(now.tzinfo)
    facts: list[Fact] = []
    days: dict[str, date] = {}

    def day_fact(name: str, day: date, source: str) -> None:
        value = format_day(day, language)
        if all(f.value != value for f in facts):
            facts.append(Fact(name=name, value=value, source=source))
        days[value] = day

    def weekday_fact(day: date, label: str) -> None:
        name = f"{label}的星期" if zh else f"the day of the week of {label}"
        facts.append(Fact(name=name, value=format_weekday(day, language), source=CALENDAR))

    asks_date, asks_weekday = bool(_ASKS_DATE.search(question)), bool(_ASKS_WEEKDAY.search(question))
    asks_days = bool(_ASKS_DAYS.search(question))
    today_name = f"今天的日期（{timezone}）" if zh else f"today's date ({timezone})"
    named_days = [s for s in spans if s.is_day and s.start != today]
    names_today = any(s.is_day and s.start == today for s in spans)
    if names_today or ((asks_date or asks_weekday) and not named_days):
        day_fact(today_name, today, CLOCK)
        if asks_weekday and not named_days:
            weekday_fact(today, "今天" if zh else "today")
    for span in spans:
        if span.is_day and span.start == today:
            continue
        name = f"“{span.text}”的日期" if zh else f'the date of "{span.text}"'
        if span.is_day:
            day_fact(name, span.start, CALENDAR)
            if asks_weekday:
                weekday_fact(span.start, format_day(span.start, language))
        else:
            facts.append(
                Fact(
                    name=f"“{span.text}”的日期范围" if zh else f'the dates of "{span.text}"',
                    value=format_span(span, language),
                    source=CALENDAR,
                )
            )
    between = [s for s in spans if not s.is_day and _FROM_TO.search(s.text)]
    if asks_days and named_days:
        facts.append(_days_fact(today, named_days, language))
    elif asks_days and between:  # 从上周五到现在: the span runs from one day to the other
        ends = [DateSpan(between[0].text, day, day, between[0].position) for day in (between[0].start, between[0].end)]
        facts.append(_days_fact(today, ends, language))
    if asks_weekday:  # what was asked first: a small model answers from the first fact
        facts.sort(key=lambda f: f.value not in WEEKDAYS)
    if _ASKS_YEAR.search(question):
        name = f"今年（{timezone}）" if zh else f"the current year ({timezone})"
        facts.append(Fact(name=name, value=f"{today.year}年" if zh else str(today.year), source=CLOCK))
    if _ASKS_TIME.search(question):
        name = f"现在的时间（{timezone}）" if zh else f"the time now ({timezone})"
        facts.append(Fact(name=name, value=now.strftime("%H:%M"), source=CLOCK))
    return facts, days


def _days_fact(today: date, named_days: Sequence[DateSpan], language: str) -> Fact:
    """Days between two named days, or between today and the one named."""
    zh = language == "zh"
    if len(named_days) >= 2:
        first, second = named_days[0].start, named_days[1].start
        count = abs((second - first).days)
        a, b = format_day(min(first, second), language), format_day(max(first, second), language)
        name = f"{a}到{b}相隔的天数" if zh else f"days from {a} to {b}"
    else:
        day = named_days[0].start
        count = abs((day - today).days)
        a, b = format_day(today, language), format_day(day, language)
        if day >= today:
            name = f"从今天（{a}）到{b}的天数" if zh else f"days from today ({a}) until {b}"
        else:
            name = f"从{b}到今天（{a}）已过去的天数" if zh else f"days from {b} to today ({a})"
    value = f"{count}天" if zh else f"{count} day{'s' if count != 1 else ''}"
    return Fact(name=name, value=value, source=CALENDAR)


def _calculation_fact(calculation: Calculation, language: str) -> Fact:
    name = (
        f"{calculation.expression} 的计算结果"
        if language == "zh"
        else f"the result of {calculation.expression}"
    )
    return Fact(name=name, value=calculation.result, source=CALCULATOR, mentions=calculation.written)


def _conversion_fact(conversion: Conversion, language: str) -> Fact:
    if language == "zh":
        name = f"{conversion.amount}换算成{conversion.target_unit}"
    else:
        name = f"{conversion.amount} in {conversion.target_unit}"
    return Fact(name=name, value=conversion.value, source=UNITS, mentions=(conversion.amount,))


def _with_dates(question: str, spans: Sequence[DateSpan], language: str) -> str:
    """The question with each resolved date written beside its words, in the forms documents use."""
    if not spans:
        return question
    parts: list[str] = []
    position = 0
    for span in spans:
        end = span.position + len(span.text)
        iso = span.start.isoformat() if span.is_day else f"{span.start.isoformat()}/{span.end.isoformat()}"
        written = format_span(span, language)
        beside = f"（{written}，{iso}）" if language == "zh" else f" ({written}, {iso})"
        parts += [question[position:end], beside]
        position = end
    parts.append(question[position:])
    return "".join(parts)
