"""The calculator: arithmetic read from Chinese and English questions, computed exactly, and hostile input
refused in bounded time and memory."""

from __future__ import annotations

import time
import tracemalloc
from decimal import Decimal

import pytest

from app.rag.facts.calculator import CalculationError, evaluate, find_calculations


def results(question: str) -> list[tuple[str, str]]:
    return [(c.expression, c.result) for c in find_calculations(question)]


@pytest.mark.parametrize(
    ("question", "expression", "result"),
    [
        ("3.5万加上12800是多少？", "35000 + 12800", "47800"),
        ("三万五千减去一万二等于多少？", "35000 - 12000", "23000"),
        ("1.2亿除以3是多少", "120000000 / 3", "40000000"),
        ("12乘以8再加上4是多少？", "12 * 8 + 4", "100"),
        ("(3+4)*2 是多少", "(3 + 4) * 2", "14"),
        ("50%乘以200是多少", "0.5 * 200", "100"),
        ("2的平方是多少", "2 ^ 2", "4"),
        ("0.1+0.2等于多少", "0.1 + 0.2", "0.3"),
        ("What is 1,200 * 1.08?", "1200 * 1.08", "1296"),
        ("what is 10 divided by 3?", "10 / 3", "3.3333333333"),
        ("How much is 250 plus 17.5?", "250 + 17.5", "267.5"),
        ("What is 2^10?", "2 ^ 10", "1024"),
        ("What is -5 + 3?", "-5 + 3", "-2"),
    ],
)
def test_arithmetic_in_questions(question: str, expression: str, result: str) -> None:
    assert results(question) == [(expression, result)]


def test_listed_amounts_are_added_up() -> None:
    assert results("这三项费用 120、80和45.5合计多少？") == [("120 + 80 + 45.5", "245.5")]
    assert results("What is the total of 3, 4 and 5?") == [("3 + 4 + 5", "12")]
    # Numbers that are not a list are no sum: "3 rooms on floor 2".
    assert results("What is the total size of 3 rooms on floor 2?") == []


def test_numbers_that_are_not_arithmetic_are_left_alone() -> None:
    for question in [
        "2026-12-02 的会议说了什么？",
        "升级到 v2.3.4 之后怎么办？",
        "192.168.1.1 是什么地址？",
        "10:30 的会议在哪里？",
        "3-5 天内发货",  # no question of value
        "How do I delete a local branch?",
        "第3章讲了什么",
    ]:
        assert results(question) == [], question


def test_numbers_longer_than_any_result_are_read_not_computed() -> None:
    # 29 digits is below the largest result; 39 is above it: refused, not a crash.
    assert results("99999999999999999999999999999 + 0 = ?") == [("99999999999999999999999999999 + 0", "9" * 29)]
    assert results("123456789012345678901234567890123456789 + 1 = ?") == []


def test_exact_decimals() -> None:
    assert evaluate("0.1 + 0.2") == Decimal("0.3")
    assert evaluate("1 / 4") == Decimal("0.25")
    assert evaluate("-(2 ^ 3)") == Decimal(-8)
    assert evaluate("2 ^ -2") == Decimal("0.25")


@pytest.mark.parametrize(
    "expression",
    [
        "2 ^ 99999999",  # a huge exponent
        "9 ^ 64 ^ 64",  # huge by repetition
        "10 ^ 30",  # past the largest result
        "2 ^ 0.5",  # no fractional exponents
        "1 / 0",
        "0 ^ -1",
        "(" * 50 + "1" + ")" * 50,  # deep nesting
        "-" * 50 + "1",
        "1 +" * 100 + " 1",  # too many tokens
        "__import__('os')",  # names, calls, attributes: not in the grammar
        "().__class__",
        "a + 1",
        "1 + ",
        "(1 + 2",
        "",
    ],
)
def test_hostile_expressions_are_refused(expression: str) -> None:
    with pytest.raises(CalculationError):
        evaluate(expression)


def test_hostile_questions_cost_bounded_time_and_memory() -> None:
    hostile = [
        "1+" * 500_000 + "1 等于多少？",  # a 1 MB expression
        "(" * 1_000_000 + "1" + ")" * 1_000_000 + "=?",
        "9" * 1_000_000 + " ^ 9 = ?",
        "2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2 是多少？",
        "What is " + "(1+" * 10_000 + "1" + ")" * 10_000 + "?",
        "__import__('os').system('echo hi') 等于多少？",
        "().__class__.__bases__[0].__subclasses__() = ?",
    ]
    for question in hostile:
        tracemalloc.start()
        began = time.perf_counter()
        found = find_calculations(question)
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seconds < 0.5, (question[:40], seconds)
        assert peak < 20 * 1024 * 1024, (question[:40], peak)
        assert all(abs(c.value) < Decimal(10) ** 30 for c in found)
