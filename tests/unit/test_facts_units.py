"""Unit conversions read from Chinese and English questions, through pint."""

from __future__ import annotations

import pytest

from app.rag.facts.units import find_conversions


@pytest.mark.parametrize(
    ("question", "value"),
    [
        ("5公里是多少英里？", "3.1069"),
        ("100华氏度等于多少摄氏度", "37.7778"),
        ("3斤是多少公斤？", "1.5"),
        ("10亩是多少平方米？", "6666.6667"),
        ("2平方公里是多少亩？", "3000"),
        ("convert 10 kg to pounds", "22.0462"),
        ("How many feet is 3 meters?", "9.8425"),
        ("What is 5 km in miles?", "3.1069"),
        ("What is 100 °F in celsius?", "37.7778"),
        ("How many liters are in 2 gallons?", "7.5708"),
    ],
)
def test_conversions(question: str, value: str) -> None:
    (conversion,) = find_conversions(question)
    assert conversion.value == value


def test_no_conversion_without_units_of_one_dimension() -> None:
    for question in [
        "2公里等于多少公斤？",  # length is no mass
        "3 apples to oranges",
        "How do I delete a branch in Git?",
        "把 5 个文件移到 tmp 目录",
    ]:
        assert find_conversions(question) == [], question
