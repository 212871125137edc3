"""Unit conversions a question asks for, through ``pint``: "5公里是多少英里？", "100华氏度等于多少摄氏度",
"convert 10 kg to pounds", "How many feet is 3 meters?".

Chinese unit names are mapped to pint's (a table below: pint knows English names and symbols only); 斤 and 亩,
which pint lacks, are defined on the registry. Only conversions between units of one dimension are answered;
anything else is no fact. The registry (about a second to build) is built on first use.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.rag.facts.calculator import format_number

# Longest names first, so that 平方公里 is not read as 公里.
_ZH_UNITS = {
    "平方公里": "kilometer ** 2",
    "平方千米": "kilometer ** 2",
    "平方米": "meter ** 2",
    "公顷": "hectare",
    "亩": "chinese_mu",
    "公里": "kilometer",
    "千米": "kilometer",
    "厘米": "centimeter",
    "毫米": "millimeter",
    "英里": "mile",
    "海里": "nautical_mile",
    "英尺": "foot",
    "英寸": "inch",
    "码": "yard",
    "米": "meter",
    "公斤": "kilogram",
    "千克": "kilogram",
    "毫克": "milligram",
    "克": "gram",
    "吨": "metric_ton",
    "斤": "chinese_jin",
    "磅": "pound",
    "盎司": "ounce",
    "毫升": "milliliter",
    "升": "liter",
    "加仑": "gallon",
    "摄氏度": "degree_Celsius",
    "华氏度": "degree_Fahrenheit",
    "开尔文": "kelvin",
    "千瓦时": "kilowatt_hour",
    "焦耳": "joule",
    "卡路里": "calorie",
    "千卡": "kilocalorie",
    "小时": "hour",
    "分钟": "minute",
    "秒": "second",
    "公里每小时": "kilometer_per_hour",
    "英里每小时": "mile_per_hour",
}
_ZH_NAMES = "|".join(sorted(_ZH_UNITS, key=len, reverse=True))
_NUMBER = r"(?P<number>-?\d+(?:,\d{3})*(?:\.\d+)?)"
_ZH_CONVERSION = re.compile(
    rf"{_NUMBER}\s*(?P<source>{_ZH_NAMES})\s*(?:是|等于|合|换算成|换成|折合|约)\s*(?:多少|几)?\s*(?:个)?\s*(?P<target>{_ZH_NAMES})"
)
_EN_UNIT = r"[a-z][a-z_ ]{0,24}?"
_EN_CONVERSIONS = [
    # "convert 10 kg to pounds", "5 km in miles", "what is 100 °F in celsius"
    re.compile(rf"{_NUMBER}\s*(?P<source>°?{_EN_UNIT})\s+(?:to|in|into)\s+(?P<target>°?{_EN_UNIT})(?=[?.!,]|$)", re.I),
    # "how many feet is 3 meters", "how many pounds are in 10 kg"
    re.compile(rf"how\s+many\s+(?P<target>{_EN_UNIT})\s+(?:is|are|in|make)\s+(?:in\s+)?{_NUMBER}\s*(?P<source>°?{_EN_UNIT})(?=[?.!,]|$)", re.I),
]
_UNIT_HINT = re.compile(rf"{_ZH_NAMES}|\b(?:to|in|into|how\s+many)\b", re.I)


@dataclass(frozen=True)
class Conversion:
    amount: str  # "5 公里", "10 kg": as the question wrote it
    value: str  # "3.1069": the converted amount, to 4 decimals
    source_unit: str
    target_unit: str


class _Registry:
    def __init__(self) -> None:
        self._registry: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    import pint

                    registry: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
                    registry.define("chinese_jin = 500 * gram")
                    registry.define("chinese_mu = 10000 / 15 * meter ** 2")
                    self._registry = registry
        return self._registry


REGISTRY = _Registry()


def _unit(registry: Any, text: str) -> Any:
    name = _ZH_UNITS.get(text.strip(), text.strip().lower().replace("°", "deg").replace(" ", "_"))
    aliases = {"degc": "degree_Celsius", "degf": "degree_Fahrenheit", "celsius": "degree_Celsius"}
    aliases |= {"fahrenheit": "degree_Fahrenheit", "degrees_celsius": "degree_Celsius"}
    aliases |= {"degrees_fahrenheit": "degree_Fahrenheit"}
    return registry.parse_units(aliases.get(name, name))


def find_conversions(question: str) -> list[Conversion]:
    """The conversions ``question`` asks for, computed; nothing for anything else."""
    if not _UNIT_HINT.search(question) or not re.search(r"\d", question):
        return []
    matches = list(_ZH_CONVERSION.finditer(question))
    for pattern in _EN_CONVERSIONS:
        matches += pattern.finditer(question)
    if not matches:
        return []
    import pint

    registry = REGISTRY.get()
    found: list[Conversion] = []
    for match in matches:
        try:
            source, target = _unit(registry, match.group("source")), _unit(registry, match.group("target"))
            amount = Decimal(match.group("number").replace(",", ""))
            converted = registry.Quantity(float(amount), source).to(target)
        except (pint.errors.PintError, ValueError, AttributeError, TypeError, AssertionError):
            continue  # not units pint knows, or not of one dimension: no fact
        magnitude = format_number(Decimal(repr(round(float(converted.magnitude), 4))))
        found.append(
            Conversion(
                amount=f"{match.group('number')} {match.group('source').strip()}",
                value=magnitude,
                source_unit=match.group("source").strip(),
                target_unit=match.group("target").strip(),
            )
        )
    return found
