"""Arithmetic a question asks for, computed exactly and safely: "3.5万加上12800是多少？", "what is 1,200 *
1.08?", "120、80和45.5合计多少？".

The question's numbers (Arabic, with 万/亿/千/百 multipliers, or Chinese numerals through ``cn2an``) and its
operator words (加上, 减去, 乘以, 除以, plus, minus, times, divided by) are rewritten into a plain expression,
which a small recursive-descent parser reads and computes in ``Decimal``. Nothing is ever handed to ``eval``
or Python's compiler: the grammar has numbers, + - * / ^, unary signs and parentheses, and nothing else
(no names, calls or attributes), and it is bounded: at most ``MAX_TOKENS`` tokens, ``MAX_DEPTH`` levels of
nesting, integer exponents up to ``MAX_EXPONENT`` and results below ``MAX_MAGNITUDE``. Only the first
``MAX_SCAN`` characters of a question are read, so a megabyte of input costs what a page does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext

MAX_SCAN = 2000
MAX_TOKENS = 64
MAX_DEPTH = 12
MAX_EXPONENT = 64
MAX_MAGNITUDE = Decimal(10) ** 30
_FORMAT_CONTEXT = Context(prec=4 * MAX_SCAN, Emax=4 * MAX_SCAN, Emin=-4 * MAX_SCAN)
_CONTEXT = Context(prec=34, Emax=100, Emin=-100, traps=[InvalidOperation, DivisionByZero, Overflow])


class CalculationError(ValueError):
    """The expression is not arithmetic this calculator does, or is out of its bounds."""


@dataclass(frozen=True)
class Calculation:
    expression: str  # as computed: "35000 + 12800"
    value: Decimal
    written: tuple[str, ...] = ()  # the question's numbers as it wrote them: "3.5万", "12800"

    @property
    def result(self) -> str:
        return format_number(self.value)


def format_number(value: Decimal) -> str:
    """Plain digits, no exponent, at most 10 decimals, no trailing zeros: 47800, 0.3333333333, 1296."""
    with localcontext(_FORMAT_CONTEXT):  # room for any number a document or the question may write
        rounded = value.quantize(Decimal(1)) if value == value.to_integral_value() else round(value, 10)
    text = f"{rounded:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# Reading the question.

_MULTIPLIERS = {"百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_ZH_NUMERALS = "零〇一二两三四五六七八九十百千万亿"
# 3.5万, 3万5 (35000), 1万2千, 1,200, 12800, 45.5%, 百分之十五, and runs of Chinese numerals (三万五千, 一万二).
_NUMBER = re.compile(
    rf"百分之(?P<pct_of>\d+(?:\.\d+)?|[{_ZH_NUMERALS}]+)"
    rf"|(?P<arabic>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<mult>[百千万亿]?)"
    rf"(?:(?<=[万亿])(?P<rest>\d{{1,4}})(?P<rest_mult>[千百]?)(?!\d))?(?P<pct>%?)"
    rf"|(?P<zh>[{_ZH_NUMERALS}]*[一二两三四五六七八九十][{_ZH_NUMERALS}]*)"
)
_OPERATOR_WORDS = [
    (re.compile(r"加上|加|＋|\bplus\b|\badded to\b", re.I), "+"),
    (re.compile(r"减去|减|－|−|\bminus\b|\bless\b", re.I), "-"),
    (re.compile(r"乘以|乘|×|\btimes\b|\bmultiplied by\b|(?<=\d)\s*[xX]\s*(?=\d)", re.I), "*"),
    (re.compile(r"除以|÷|\bdivided by\b|\bover\b", re.I), "/"),
    (re.compile(r"的平方", re.I), "^2"),
    # "15% of 200", "200的15%": a share of a number.
    (re.compile(r"(?<=\d)\s*(?:的|\bof\b)\s*(?=\d)", re.I), "*"),
    (re.compile(r"（"), "("),
    (re.compile(r"）"), ")"),
    (re.compile(r"\*\*"), "^"),
    # Words between an operand and the next operator: "12乘以8再加上4", "12 times 8 then plus 4".
    (re.compile(r"再|然后|\bthen\b", re.I), ""),
]
# "A、B和C合计多少", "the sum of A, B and C", "total of A and B": the listed numbers added up.
_SUM_WORDS = re.compile(r"合计|总计|一共|总共|加起来|之和|总和|\bsum\b|\btotal\b|\badd up\b", re.I)
_LIST_SEPARATOR = re.compile(r"^\s*(?:、|,|，|和|与|及|以及|\band\b|\bplus\b)\s*$", re.I)
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([-+*/^()]))")
_WORTH_READING = re.compile(rf"[\d{_ZH_NUMERALS}]")
# The question asks for a value: without such words "3-5 天" or "room 2/3" is no sum to compute.
_ASKS_FOR_VALUE = re.compile(
    r"多少|等于|是几|得几|几何|合计|总计|一共|总共|加起来|算一下|计算|=|\?|？|"
    r"\bwhat(?:'s| is)\b|\bhow much\b|\bcalculate\b|\bcompute\b|\bequals?\b|\bsum\b|\btotal\b",
    re.I,
)
# Dates, times, versions and addresses are numbers joined by - / . : that are not arithmetic.
_NOT_ARITHMETIC = re.compile(r"\d+(?:[-/.:]\d+){2,}|\d{1,2}:\d{2}|\b[vV]\d+(?:\.\d+)+")


def _number_value(found: re.Match[str]) -> Decimal | None:
    if found.group("pct_of"):
        of = found.group("pct_of")
        value = Decimal(of) if of[0].isdigit() else chinese_numeral(of)
        return value / 100 if value is not None else None
    if found.group("arabic"):
        value = Decimal(found.group("arabic").replace(",", ""))
        if found.group("mult"):
            value *= _MULTIPLIERS[found.group("mult")]
        if found.group("rest"):  # 3万5 is 35000, 1万2千 is 12000, 1亿5 is 150000000
            unit = _MULTIPLIERS[found.group("rest_mult")] if found.group("rest_mult") else None
            unit = unit or _MULTIPLIERS[found.group("mult")] // 10
            value += Decimal(found.group("rest")) * unit
        if found.group("pct"):
            value /= 100
        return value
    text = found.group("zh")
    if len(text) == 1 and text not in "十":  # a lone 一 or 二 is a word more often than a number ("一下")
        return None
    return chinese_numeral(text)


def chinese_numeral(text: str) -> Decimal | None:
    """三万五千 → 35000, through cn2an; None for what is not a number."""
    import cn2an

    try:
        return Decimal(str(cn2an.cn2an(text, "smart")))
    except (ValueError, KeyError, IndexError):
        return None


def _normalise(question: str) -> tuple[str, list[Decimal], list[str]]:
    """The question with numbers as plain decimals and operator words as symbols; and its numbers."""
    numbers: list[Decimal] = []
    written: list[str] = []

    def number(found: re.Match[str]) -> str:
        value = _number_value(found)
        if value is None:
            return found.group(0)
        numbers.append(value)
        written.append(found.group(0))
        return f" {format_number(value)} "

    text = _NUMBER.sub(number, _NOT_ARITHMETIC.sub(" ; ", question[:MAX_SCAN]))
    for pattern, symbol in _OPERATOR_WORDS:
        text = pattern.sub(f" {symbol} ", text)
    return text, numbers, written


def _expressions(text: str) -> list[str]:
    """Maximal runs of arithmetic tokens holding at least one operator between numbers."""
    runs: list[str] = []
    position = 0
    current: list[str] = []

    def close() -> None:
        expression = " ".join(current).strip()
        if re.search(r"\d\s*\)*\s*[-+*/^]\s*\(*\s*-?\s*\d", expression):
            runs.append(expression)
        current.clear()

    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None:
            close()
            position += 1
            continue
        current.append(found.group(1) or found.group(2))
        position = found.end()
    close()
    return runs


def find_calculations(question: str) -> list[Calculation]:
    """The arithmetic the question asks for, computed; nothing when it asks for none (or for more than this
    calculator does)."""
    head = question[:MAX_SCAN]
    if not _WORTH_READING.search(head) or not _ASKS_FOR_VALUE.search(head):
        return []
    text, numbers, written = _normalise(question)
    found: list[Calculation] = []
    for expression in _expressions(text):
        try:
            found.append(Calculation(_spaced(expression), evaluate(expression), tuple(written)))
        except CalculationError:
            continue
    if not found and len(numbers) >= 2 and _SUM_WORDS.search(head) and _listed(text):
        with localcontext(_CONTEXT):
            total = sum(numbers, Decimal(0))
        found.append(Calculation(" + ".join(format_number(n) for n in numbers), total, tuple(written)))
    return found


def _listed(text: str) -> bool:
    """The numbers stand in a list (separated by 、 , 和 and): "120、80和45.5", not "3 rooms on floor 2"."""
    gaps = re.split(r"-?\d+(?:\.\d+)?", text)[1:-1]
    return bool(gaps) and all(_LIST_SEPARATOR.match(gap) for gap in gaps)


def _spaced(expression: str) -> str:
    """One space around each binary operator, none after a sign or inside parentheses: "(3 + 4) * -2"."""
    parts: list[str] = []
    previous: str | None = None
    after_sign = False
    for found in _TOKEN.finditer(expression):
        token = found.group(1) or found.group(2)
        glued = previous is None or previous == "(" or token == ")" or after_sign
        parts.append(token if glued else f" {token}")
        after_sign = token in "+-" and (previous is None or previous in "+-*/^(")
        previous = token
    return "".join(parts)


# The parser: expression := term (("+" | "-") term)*; term := power (("*" | "/") power)*;
# power := unary ("^" power)?; unary := ("+" | "-") unary | atom; atom := NUMBER | "(" expression ")".


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise CalculationError("the expression ends too early")
        self.position += 1
        return token

    def expression(self) -> Decimal:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
            _bounded(value)
        return value

    def term(self) -> Decimal:
        value = self.power()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value *= self.power()
            else:
                divisor = self.power()
                if divisor == 0:
                    raise CalculationError("division by zero")
                value /= divisor
            _bounded(value)
        return value

    def power(self) -> Decimal:
        base = self.unary()
        if self.peek() != "^":
            return base
        self.take()
        self._enter()
        exponent = self.power()
        self.depth -= 1
        if exponent != exponent.to_integral_value() or abs(exponent) > MAX_EXPONENT:
            raise CalculationError(f"exponents are whole numbers up to {MAX_EXPONENT}")
        if base == 0 and exponent < 0:
            raise CalculationError("division by zero")
        return _bounded(base ** int(exponent))

    def unary(self) -> Decimal:
        if self.peek() in ("+", "-"):
            sign = self.take()
            self._enter()
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.atom()

    def atom(self) -> Decimal:
        token = self.take()
        if token == "(":
            self._enter()
            value = self.expression()
            self.depth -= 1
            if self.take() != ")":
                raise CalculationError("unbalanced parentheses")
            return value
        if token[0].isdigit():
            return _bounded(Decimal(token))
        raise CalculationError(f"unexpected {token!r}")

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculationError(f"nested deeper than {MAX_DEPTH} levels")


def _bounded(value: Decimal) -> Decimal:
    if abs(value) >= MAX_MAGNITUDE:
        raise CalculationError("the result is too large")
    return value


def evaluate(expression: str) -> Decimal:
    """The value of a plain arithmetic expression (numbers, + - * / ^, parentheses), within the bounds above."""
    tokens: list[str] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None:
            raise CalculationError(f"unexpected {text[position]!r}")
        tokens.append(found.group(1) or found.group(2))
        if len(tokens) > MAX_TOKENS:
            raise CalculationError(f"more than {MAX_TOKENS} tokens")
        position = found.end()
        while position < len(text) and text[position].isspace():
            position += 1
    if not tokens:
        raise CalculationError("no expression")
    parser = _Parser(tokens)
    try:
        with localcontext(_CONTEXT):
            value = parser.expression()
    except (InvalidOperation, DivisionByZero, Overflow) as error:
        raise CalculationError("the result is out of range") from error
    if parser.peek() is not None:
        raise CalculationError(f"unexpected {parser.peek()!r}")
    return value
