"""Facts end to end with the bundled model: today's date, the weekday, days until a named day and a sum,
answered for the real current date in the time zone the request gives, with the facts in the response and
the answer record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

DOCUMENT = (
    "# 报销制度\n\n差旅费在出差结束后 30 天内报销。住宿标准为每晚 500 元。\n\n"
    "# Expenses\n\nTravel expenses are claimed within 30 days after the trip.\n"
)
ZH_WEEKDAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]


def local_today(timezone: str) -> date:
    """Today where the asker is, computed here without wenda's code."""
    return datetime.now(UTC).astimezone(ZoneInfo(timezone)).date()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        worker={"poll_seconds": 0.05},
        llm={"local_model_dir": bundled_model_dir, "max_tokens": 64},
    )
    services = build_components(settings)
    with TestClient(create_app(components=services)) as test_client:
        job = test_client.post(
            "/v1/collections/kb/documents", files={"file": ("kb.md", DOCUMENT.encode())}
        ).json()
        deadline = time.monotonic() + 120
        while test_client.get(f"/v1/jobs/{job['job_id']}").json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield test_client
    services.engine.dispose()


def ask(client: TestClient, question: str, timezone: str) -> dict[str, object]:
    response = client.post("/v1/ask", json={"collection": "kb", "question": question, "tz": timezone, "debug": True})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    assert body["grounded"], body["debug"]
    assert body["timezone"] == timezone
    return body


def _facts(body: dict[str, object]) -> list[str]:
    return [str(f["value"]) for f in body["facts"]]  # type: ignore[attr-defined, index]


@pytest.mark.parametrize("timezone", ["Asia/Shanghai", "America/Los_Angeles"])
def test_todays_date_and_weekday(client: TestClient, timezone: str) -> None:
    today = local_today(timezone)
    body = ask(client, "今天是几号？", timezone)
    assert f"{today.year}年{today.month}月{today.day}日" in str(body["answer"])
    body = ask(client, "What is today's date?", timezone)
    assert f"{today.strftime('%B')} {today.day}, {today.year}" in str(body["answer"])
    body = ask(client, "今天星期几？", timezone)
    assert ZH_WEEKDAYS[today.weekday()] in str(body["answer"])
    assert ZH_WEEKDAYS[today.weekday()] in _facts(body)


def test_days_until_new_year_and_a_sum(client: TestClient) -> None:
    today = local_today("Asia/Shanghai")
    days = (date(today.year + 1, 1, 1) - today).days
    body = ask(client, "距离明年元旦还有多少天？", "Asia/Shanghai")
    assert f"{days}天" in str(body["answer"]).replace(" ", ""), body
    assert f"{days}天" in _facts(body)
    body = ask(client, "3.5万加上12800是多少？", "Asia/Shanghai")
    assert "47800" in str(body["answer"]).replace(",", "")
    assert body["facts"] == [{"name": "35000 + 12800 的计算结果", "value": "47800", "source": "calculator"}]
    # The record keeps the facts, the check and the zone.
    record = client.get(f"/v1/queries/{body['query_id']}").json()
    assert record["facts"] == body["facts"] and record["timezone"] == "Asia/Shanghai"
    assert record["fact_check"]["verdict"] in ("consistent", "corrected")


def test_a_question_about_the_documents_gets_no_fact(client: TestClient) -> None:
    body = ask(client, "差旅费在多少天内报销？", "Asia/Shanghai")
    assert body["facts"] == [] and "30" in str(body["answer"])
    assert body["fact_check"]["verdict"] == "none"  # type: ignore[index]


def test_an_unknown_time_zone_is_a_422_naming_it(client: TestClient) -> None:
    response = client.post("/v1/ask", json={"collection": "kb", "question": "今天是几号？", "tz": "Mars/Base"})
    assert response.status_code == 422 and "Mars/Base" in response.text
