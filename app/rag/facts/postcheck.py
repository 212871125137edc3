"""The answer read against the facts it was given: a sentence that cites a fact (or speaks of today) and writes
another date, weekday, day count or result than the fact holds is corrected to the fact's value when there is
exactly one thing to correct, and flagged otherwise. Runs before the citation check, so a corrected sentence is
then checked like any other; the verdict goes into the response and the answer record."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

from app.rag.citations import Passage
from app.rag.evidence import DocumentSpan, Fact
from app.rag.facts.calculator import format_number
from app.rag.facts.dates import EN_MONTHS, EN_WEEKDAYS, ZH_WEEKDAYS, format_day
from app.rag.facts.layer import CALCULATOR, UNITS, FactFindings


class FactVerdict(StrEnum):
    NONE = "none"  # no fact was given, nothing to check
    CONSISTENT = "consistent"
    CORRECTED = "corrected"  # every contradiction was corrected to the fact's value
    FLAGGED = "flagged"  # a contradiction could not be corrected safely; its sentence is named


@dataclass(frozen=True)
class FactIssue:
    fact: str  # the fact's name
    wrote: str
    expected: str
    action: str  # "corrected" | "flagged"


@dataclass(frozen=True)
class FactCheck:
    verdict: FactVerdict
    issues: tuple[FactIssue, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "issues": [
                {"fact": i.fact, "wrote": i.wrote, "expected": i.expected, "action": i.action}
                for i in self.issues
            ],
        }


_MONTHS = "|".join(EN_MONTHS)
_WRITTEN_DATE = re.compile(
    rf"(?P<y1>\d{{4}})\s*年\s*(?P<m1>\d{{1,2}})\s*月\s*(?P<d1>\d{{1,2}})\s*[日号]"
    rf"|(?P<y2>\d{{4}})-(?P<m2>\d{{1,2}})-(?P<d2>\d{{1,2}})"
    rf"|(?P<mn>{_MONTHS})\s+(?P<d3>\d{{1,2}}),?\s+(?P<y3>\d{{4}})"
    rf"|(?P<d4>\d{{1,2}})\s+(?P<mn4>{_MONTHS}),?\s+(?P<y4>\d{{4}})",
    re.I,
)
_WEEKDAY = re.compile(
    "|".join([*ZH_WEEKDAYS, "星期天", *(f"周{c}" for c in "一二三四五六日天"), *EN_WEEKDAYS]), re.I
)
_DAY_COUNT = re.compile(r"(\d+)\s*(天|days?\b)", re.I)
_NUMBER = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|(?<![\d.])\d+(?:\.\d+)?(?![\d.])")
_MARKER = re.compile(r"\[(\d+)\]")
COMPUTED = (CALCULATOR, UNITS)
_TODAY = re.compile(r"今天|今日|\btoday\b", re.I)


def _written_day(found: re.Match[str]) -> date | None:
    try:
        if found.group("y1"):
            return date(int(found.group("y1")), int(found.group("m1")), int(found.group("d1")))
        if found.group("y2"):
            return date(int(found.group("y2")), int(found.group("m2")), int(found.group("d2")))
        if found.group("y3"):
            month = [m.lower() for m in EN_MONTHS].index(found.group("mn").lower()) + 1
            return date(int(found.group("y3")), month, int(found.group("d3")))
        month = [m.lower() for m in EN_MONTHS].index(found.group("mn4").lower()) + 1
        return date(int(found.group("y4")), month, int(found.group("d4")))
    except ValueError:
        return None


def _sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans: up to 。！？!? or a newline, or a full stop followed by a space."""
    spans: list[tuple[int, int]] = []
    start = 0
    for found in re.finditer(r"[。！？!?]+|\n|\.(?=\s|$)", text):
        spans.append((start, found.end()))
        start = found.end()
    if start < len(text):
        spans.append((start, len(text)))
    # A citation marker after the full stop belongs to the sentence before it.
    merged: list[tuple[int, int]] = []
    for begin, end in spans:
        if merged and re.fullmatch(r"\s*(\[\d+\]\s*)+[。.]?\s*", text[begin:end]):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged


def check_facts(
    answer: str, findings: FactFindings, passages: Sequence[Passage], language: str
) -> tuple[str, FactCheck]:
    """The answer with contradictions of the facts corrected where that is safe, and the verdict."""
    if not findings.facts:
        return answer, FactCheck(FactVerdict.NONE)
    by_number = {p.number: p.evidence for p in passages if isinstance(p.evidence, Fact)}
    # Numbers the documents write are theirs to state, whatever the facts say.
    documents = " ".join(p.evidence.text for p in passages if isinstance(p.evidence, DocumentSpan))
    quoted = {_plain(m.group(0)) for m in _NUMBER.finditer(documents)}
    issues: list[FactIssue] = []
    pieces: list[str] = []
    position = 0
    for begin, end in _sentences(answer):
        sentence = answer[begin:end]
        cited = [by_number[n] for n in map(int, _MARKER.findall(sentence)) if n in by_number]
        unmarked = not _MARKER.search(sentence)
        checked = _check_sentence(sentence, cited, unmarked, quoted, findings, language, issues)
        pieces += [answer[position:begin], checked]
        position = end
    pieces.append(answer[position:])
    if not issues:
        return answer, FactCheck(FactVerdict.CONSISTENT)
    verdict = FactVerdict.FLAGGED if any(i.action == "flagged" for i in issues) else FactVerdict.CORRECTED
    return "".join(pieces), FactCheck(verdict, tuple(issues))


def _check_sentence(
    sentence: str,
    cited: list[Fact],
    unmarked: bool,
    quoted: set[str],
    findings: FactFindings,
    language: str,
    issues: list[FactIssue],
) -> str:
    """One sentence checked against the facts it cites; a sentence with no marker at all is held to today's
    date when it speaks of today, and to the result when the question asked for one."""
    today_fact = next(
        (f for f in findings.facts if findings.days.get(f.value) == findings.calendar.today), None
    )
    day_facts = [f for f in cited if f.value in findings.days]
    if not day_facts and today_fact is not None and _TODAY.search(sentence) and unmarked:
        day_facts = [today_fact]  # "今天是2026年12月3日。" with no marker, where the clock says otherwise
    known_days = set(findings.days.values())
    if day_facts:
        sentence = _correct(
            sentence,
            [
                (m.group(0), m.start())
                for m in _WRITTEN_DATE.finditer(sentence)
                if _written_day(m) not in known_days
            ],
            day_facts,
            lambda fact: format_day(findings.days[fact.value], language),
            issues,
        )
    weekday_facts = [f for f in cited if _WEEKDAY.fullmatch(f.value)]
    if weekday_facts:
        values = {f.value.lower() for f in weekday_facts}
        wrong = [
            (m.group(0), m.start())
            for m in _WEEKDAY.finditer(sentence)
            if _same_weekday(m.group(0)) not in values
        ]
        sentence = _correct(sentence, wrong, weekday_facts, lambda fact: fact.value, issues)
    count_facts = [f for f in cited if _DAY_COUNT.fullmatch(f.value)]
    if count_facts:
        # The days between two dates, named in the fact: a date the sentence miscopied is put right.
        named = {_written_day(m) for f in count_facts for m in _WRITTEN_DATE.finditer(f.name)} - {None}
        written = [(m, _written_day(m)) for m in _WRITTEN_DATE.finditer(sentence)]
        missing = sorted(d for d in named if d not in {day for _, day in written} and d is not None)
        wrong_days = [(m.group(0), m.start()) for m, day in written if day not in named]
        if len(wrong_days) == 1 and len(missing) == 1:
            (text, start), value = wrong_days[0], format_day(missing[0], language)
            issues.append(FactIssue(count_facts[0].name, text, value, "corrected"))
            sentence = sentence[:start] + value + sentence[start + len(text) :]
        for text, _ in wrong_days if len(wrong_days) != 1 or len(missing) != 1 else ():
            expected = " / ".join(format_day(d, language) for d in missing)
            issues.append(FactIssue(count_facts[0].name, text, expected, "flagged"))
        values = {_count(f) for f in count_facts}
        wrong = [(m.group(1), m.start(1)) for m in _DAY_COUNT.finditer(sentence) if m.group(1) not in values]
        sentence = _correct(sentence, wrong, count_facts, _count, issues)
    results = [f for f in cited if f.source in COMPUTED]
    if not results and (unmarked or not cited):
        # No fact cited, but the sentence restates the question's operands ("1.2亿除以3等于…"): it is about the
        # calculation, whatever it cites.
        results = [
            f
            for f in findings.facts
            if f.source in COMPUTED and (unmarked or (f.mentions and all(m in sentence for m in f.mentions)))
        ]
    if results:
        # The result, and every number the facts state (operands, amounts converted): the rest is wrong.
        stated = " ".join(" ".join([f.name, f.value, *f.mentions]) for f in findings.facts)
        allowed = {_plain(m.group(0)) for m in _NUMBER.finditer(stated)}
        wrong = [
            (m.group(0), m.start())
            for m in _NUMBER.finditer(_MARKER.sub(lambda x: " " * len(x.group(0)), sentence))
            if _plain(m.group(0)) not in allowed | quoted and not _is_cjk_date_part(sentence, m)
        ]
        sentence = _correct(sentence, wrong, results, lambda fact: fact.value, issues)
    return sentence


def _count(fact: Fact) -> str:
    """The number of a day-count fact ("30天", "23 days")."""
    found = _DAY_COUNT.fullmatch(fact.value)
    return found.group(1) if found else fact.value


def _plain(number: str) -> str:
    """A number as the calculator writes it: no thousands separators, no trailing zeros."""
    digits = number.replace(",", "")
    return format_number(Decimal(digits)) if len(digits) <= 100 else digits  # no sum is that long


def _is_cjk_date_part(sentence: str, found: re.Match[str]) -> bool:
    return sentence[found.end() : found.end() + 1] in ("年", "月", "日", "号")


def _same_weekday(text: str) -> str:
    text = text.lower()
    index = "一二三四五六日天".find(text[-1]) if text[-1] in "一二三四五六日天" else -1
    if index >= 0:
        return ZH_WEEKDAYS[min(index, 6)].lower()
    return text


def _correct(
    sentence: str,
    wrong: list[tuple[str, int]],
    facts: list[Fact],
    expected: Callable[[Fact], str],
    issues: list[FactIssue],
) -> str:
    """Replace the one wrong value by the one fact's; flag when either is not one."""
    if not wrong:
        return sentence
    if len(wrong) == 1 and len(facts) == 1:
        text, start = wrong[0]
        value = expected(facts[0])
        issues.append(FactIssue(facts[0].name, text, value, "corrected"))
        return sentence[:start] + value + sentence[start + len(text) :]
    for text, _ in wrong:
        issues.append(FactIssue(facts[0].name, text, " / ".join(expected(f) for f in facts), "flagged"))
    return sentence
