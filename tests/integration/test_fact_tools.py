"""Configured tools against real servers on loopback: an HTTP API served by uvicorn, and an MCP server built
with the official SDK over streamable HTTP and over stdio. Each works, and each failure (down, slow,
malformed) gives no fact and a note, in bounded time; /v1/ask carries tool facts and notes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.facts.tools import ConfiguredTools, ToolConfigError, load_tools
from tests.conftest import make_settings, served_on_loopback
from tests.fact_tool_servers import HttpCalls, mcp_server, rates_app
from tests.fakes import FakeChatModel, FakeEmbedder

pytestmark = [pytest.mark.integration]

SERVERS = Path(__file__).resolve().parents[1] / "fact_tool_servers.py"
PAIR = r"(?P<base>[A-Z]{3})\s*(?:兑|对|to|in)\s*(?P<quote>[A-Z]{3})"


@pytest.fixture(scope="module")
def http_calls() -> HttpCalls:
    return HttpCalls()


@pytest.fixture(scope="module")
def http_url(http_calls: HttpCalls) -> Iterator[str]:
    with served_on_loopback(rates_app(http_calls)) as url:
        yield url


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with served_on_loopback(mcp_server().streamable_http_app()) as url:
        yield f"{url}/mcp"


def _closed_port() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def write_tools(tmp_path: Path, http_url: str, mcp_url: str) -> Path:
    down = _closed_port()
    path = tmp_path / "tools.yaml"
    path.write_text(
        f"""
http:
  - name: rate
    triggers: ['{PAIR}']
    url: '{http_url}/rate?base={{base}}&quote={{quote}}'
    select: data.rate
    fact_name: '{{base}}/{{quote}} exchange rate'
    cache_ttl_seconds: 60
  - name: slow_rate
    triggers: ['slow rate']
    url: '{http_url}/slow'
    select: data.rate
    timeout_seconds: 0.5
  - name: garbage_rate
    triggers: ['garbage rate']
    url: '{http_url}/garbage'
  - name: shapeless_rate
    triggers: ['shapeless rate']
    url: '{http_url}/shapeless'
    select: data.rate
  - name: overloaded_rate
    triggers: ['overloaded rate']
    url: '{http_url}/down'
  - name: down_rate
    triggers: ['down rate']
    url: '{down}/rate'
mcp:
  - name: fx
    url: '{mcp_url}'
    timeout_seconds: 1.5
    tools:
      - name: exchange_rate
        triggers: ['mcp (?P<base>[A-Z]{{3}}) to (?P<quote>[A-Z]{{3}})']
        fact_name: '{{base}}/{{quote}} via MCP'
      - name: slow_quote
        triggers: ['slow quote (?P<symbol>[A-Z]+)']
      - name: broken_quote
        triggers: ['broken quote (?P<symbol>[A-Z]+)']
      - name: many_quotes
        triggers: ['many quotes (?P<symbol>[A-Z]+)']
  - name: gone
    url: '{down}/mcp'
    timeout_seconds: 1
    tools:
      - name: exchange_rate
        triggers: ['gone (?P<base>[A-Z]{{3}}) to (?P<quote>[A-Z]{{3}})']
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def tools(tmp_path: Path, http_url: str, mcp_url: str) -> ConfiguredTools:
    return load_tools(write_tools(tmp_path, http_url, mcp_url), ["127.0.0.1"])


def ask(tools: ConfiguredTools, question: str) -> tuple[list[tuple[str, str, str]], list[str], float]:
    async def run() -> tuple[list[tuple[str, str, str]], list[str], float]:
        began = time.perf_counter()
        facts, notes = await tools.facts_for(question)
        seconds = time.perf_counter() - began
        await tools.aclose()
        return [(f.name, f.value, f.source) for f in facts], notes, seconds

    return asyncio.run(run())


def test_an_http_tool_gives_a_fact_and_caches_it(tools: ConfiguredTools, http_calls: HttpCalls) -> None:
    before = len(http_calls.paths)
    facts, notes, _ = ask(tools, "USD兑CNY的汇率是多少？")
    assert (facts, notes) == ([("USD/CNY exchange rate", "7.1", "tool:rate")], [])
    assert http_calls.paths[before:] == ["/rate?base=USD&quote=CNY"]
    assert ask(tools, "What is USD to CNY today?")[0] == facts
    assert len(http_calls.paths) == before + 1  # the second answer came from the cache


@pytest.mark.parametrize(
    ("question", "why"),
    [
        ("slow rate?", "no answer within 0.5 s"),
        ("garbage rate?", "not JSON"),
        ("shapeless rate?", "not one value"),
        ("overloaded rate?", "HTTP 503"),
        ("down rate?", "unreachable"),
        ("XXX to YYY?", "HTTP 404"),
    ],
)
def test_a_failing_http_tool_gives_a_note_not_a_fact(tools: ConfiguredTools, question: str, why: str) -> None:
    facts, notes, seconds = ask(tools, question)
    assert facts == [] and len(notes) == 1 and why in notes[0], notes
    assert seconds < 2.0


def test_an_mcp_tool_over_streamable_http(tools: ConfiguredTools) -> None:
    facts, notes, _ = ask(tools, "mcp EUR to CNY?")
    assert ("EUR/CNY via MCP", "7.7", "tool:fx.exchange_rate") in facts and notes == []
    # Listed at start-up, not configured, needing no argument: chosen by its description.
    facts, _, _ = ask(tools, "What is the current temperature in Shanghai?")
    assert ("shanghai_temperature", "12 °C", "tool:fx.shanghai_temperature") in facts


@pytest.mark.parametrize(
    ("question", "why"),
    [
        ("slow quote ACME", "no answer within 1.5 s"),
        ("broken quote ACME", "answered an error"),
        ("many quotes ACME", "not one value"),
        ("gone EUR to CNY", "unreachable"),
    ],
)
def test_a_failing_mcp_tool_gives_a_note_not_a_fact(tools: ConfiguredTools, question: str, why: str) -> None:
    facts, notes, seconds = ask(tools, question)
    assert [n for n in notes if why in n], notes
    assert not [f for f in facts if "quote" in f[2] or "gone" in f[2]]
    assert seconds < 4.0


def test_an_mcp_tool_over_stdio(tmp_path: Path) -> None:
    path = tmp_path / "stdio.yaml"
    path.write_text(
        f"""
mcp:
  - name: local
    command: ['{sys.executable}', '{SERVERS}']
    timeout_seconds: 20
    tools:
      - name: exchange_rate
        triggers: ['(?P<base>[A-Z]{{3}}) in (?P<quote>[A-Z]{{3}})']
""",
        encoding="utf-8",
    )
    facts, notes, _ = ask(load_tools(path, []), "How much is USD in CNY?")
    assert (facts, notes) == ([("exchange_rate", "7.1", "tool:local.exchange_rate")], [])


def test_a_tool_on_a_host_not_allowed_is_refused(tmp_path: Path, http_url: str, mcp_url: str) -> None:
    with pytest.raises(ToolConfigError, match=r"127\.0\.0\.1.*not in facts\.tool_hosts"):
        load_tools(write_tools(tmp_path, http_url, mcp_url), ["example.com"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("http:\n  - name: x\n    url: 'file:///etc/passwd'\n    triggers: ['x']\n", encoding="utf-8")
    with pytest.raises(ToolConfigError, match="not an http"):
        load_tools(bad, ["127.0.0.1"])


def test_ask_carries_tool_facts_and_notes(tmp_path: Path, http_url: str, mcp_url: str) -> None:
    settings = make_settings(
        tmp_path / "data",
        facts={"tools_file": write_tools(tmp_path, http_url, mcp_url), "tool_hosts": ["127.0.0.1"]},
    )
    services = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    with TestClient(create_app(components=services)) as client:
        client.post("/v1/collections/kb/documents", files={"file": ("kb.md", b"# FX\n\nRates change daily.\n")})
        while services.worker.run_once():
            pass
        body = client.post("/v1/ask", json={"collection": "kb", "question": "USD兑CNY的汇率是多少？"}).json()
        assert {"name": "USD/CNY exchange rate", "value": "7.1", "source": "tool:rate"} in body["facts"]
        body = client.post("/v1/ask", json={"collection": "kb", "question": "What is the down rate today?"}).json()
        assert body["facts"] == [] or all(f["source"] != "tool:down_rate" for f in body["facts"])
        assert any("down_rate" in note for note in body["fact_check"]["notes"])
        record = client.get(f"/v1/queries/{body['query_id']}").json()
        assert any("down_rate" in note for note in record["fact_check"]["notes"])
    services.worker.stop()
    services.close_database()
