"""Facts from configured tools: HTTP endpoints and tools on MCP servers (the Model Context Protocol, through
the official ``mcp`` SDK over streamable HTTP or stdio).

A YAML file (``facts.tools_file``) names them::

    http:
      - name: exchange_rate
        description: The exchange rate between two currencies.
        triggers: ['(?P<base>[A-Z]{3})\\s*(?:兑|对|to|in)\\s*(?P<quote>[A-Z]{3})']
        url: https://rates.example.com/latest?base={base}&quote={quote}
        select: rates.rate          # JMESPath into the JSON answer
        fact_name: '{base}/{quote} exchange rate'
        timeout_seconds: 2
        cache_ttl_seconds: 300
    mcp:
      - name: weather
        url: http://127.0.0.1:9000/mcp      # streamable HTTP; or command: [python, server.py] for stdio
        timeout_seconds: 5
        tools:
          - name: temperature                # the server's tool
            triggers: ['(?P<city>上海|北京|Shanghai|Beijing)\\s*(?:的)?(?:气温|temperature)']

A tool is asked when one of its triggers (regular expressions, Chinese and English) matches the question; the
trigger's named groups are its arguments (URL-quoted into an HTTP tool's URL, typed by the MCP tool's input
schema). An MCP server's tools are listed at start-up; one the file does not configure is asked when the
question holds at least two words of its description and it needs no arguments. Every URL's host must be in
``facts.tool_hosts``: a tool elsewhere is refused when the file is read.

A tool that is down, slow (past its timeout), answers an error, or answers something that is not one short
value yields no fact and a note saying which and why; never a wrong fact, a hang or an error of the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import yaml
from cachetools import TTLCache

from app.rag.evidence import Fact

logger = logging.getLogger(__name__)

MAX_VALUE_CHARS = 200
_WORD = re.compile(r"[a-z]{3,}|[\u3400-\u9fff]{2}", re.I)
_STOPWORDS = frozenset(["the", "and", "for", "with", "from", "that", "this", "what", "which", "when", "where", "how", "are", "was"])


class ToolBox(Protocol):
    async def start(self) -> list[str]: ...

    async def aclose(self) -> None: ...

    async def facts_for(self, question: str) -> tuple[list[Fact], list[str]]:
        """The facts the configured tools give for ``question``, and a note for each tool that was asked
        and gave nothing."""
        ...


class ToolConfigError(ValueError):
    """The tools file is wrong; the message says where."""


class ToolFailed(Exception):
    """A tool gave no usable value; the message says why, for the note."""


@dataclass(frozen=True)
class Trigger:
    pattern: re.Pattern[str]

    def arguments(self, question: str) -> dict[str, str] | None:
        found = self.pattern.search(question)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


def _triggers(raw: Any, where: str) -> tuple[Trigger, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
        raise ToolConfigError(f"{where}: triggers must be a list of regular expressions")
    try:
        return tuple(Trigger(re.compile(t, re.I)) for t in raw)
    except re.error as error:
        raise ToolConfigError(f"{where}: a trigger is not a regular expression: {error}") from error


def _value(found: Any, select: str | None) -> str:
    """One short scalar from a tool's answer, or ``ToolFailed``."""
    if select:
        import jmespath

        try:
            found = jmespath.search(select, found)
        except jmespath.exceptions.JMESPathError as error:
            raise ToolFailed(f"select {select!r} does not apply: {error}") from error
    if isinstance(found, bool) or found is None or isinstance(found, dict | list):
        raise ToolFailed(f"the answer is not one value ({type(found).__name__})")
    text = str(found).strip()
    if not text or len(text) > MAX_VALUE_CHARS:
        raise ToolFailed("the answer is empty or too long to be a value")
    return text


def _fact_name(template: str, arguments: Mapping[str, str], tool: str) -> str:
    try:
        return template.format(**arguments) if template else tool
    except (KeyError, IndexError, ValueError):
        return tool


@dataclass
class HttpTool:
    name: str
    description: str
    triggers: tuple[Trigger, ...]
    url: str
    select: str | None = None
    fact_name: str = ""
    timeout_seconds: float = 2.0
    cache_ttl_seconds: float = 0.0
    _cache: TTLCache[str, str] | None = None

    def __post_init__(self) -> None:
        if self.cache_ttl_seconds > 0:
            self._cache = TTLCache(maxsize=1024, ttl=self.cache_ttl_seconds)

    @property
    def source(self) -> str:
        return f"tool:{self.name}"

    def url_for(self, arguments: Mapping[str, str]) -> str:
        # Arguments are quoted whole: they fill a slot, they never change the host or the path.
        return self.url.format(**{k: quote(v, safe="") for k, v in arguments.items()})

    async def call(self, client: httpx.AsyncClient, arguments: Mapping[str, str]) -> str:
        try:
            url = self.url_for(arguments)
        except (KeyError, IndexError) as error:
            raise ToolFailed(f"the question gave no {error} for its URL") from error
        if self._cache is not None and url in self._cache:
            return self._cache[url]
        try:
            response = await client.get(url, timeout=self.timeout_seconds)
        except httpx.TimeoutException as error:
            raise ToolFailed(f"no answer within {self.timeout_seconds:g} s") from error
        except httpx.HTTPError as error:
            raise ToolFailed(f"unreachable ({type(error).__name__})") from error
        if response.status_code != 200:
            raise ToolFailed(f"answered HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ToolFailed("answered something that is not JSON") from error
        value = _value(body, self.select)
        if self._cache is not None:
            self._cache[url] = value
        return value


@dataclass(frozen=True)
class McpToolSpec:
    name: str
    triggers: tuple[Trigger, ...] = ()
    select: str | None = None
    fact_name: str = ""


@dataclass
class McpServer:
    """One MCP server: reached over streamable HTTP (``url``) or stdio (``command``); a session per call (a
    few tens of ms on loopback), so a restarted or replaced server needs nothing from us."""

    name: str
    url: str | None
    command: tuple[str, ...]
    timeout_seconds: float
    configured: tuple[McpToolSpec, ...]
    listed: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name: (description, schema)

    def _target(self) -> Any:
        if self.url:
            return self.url
        from mcp import StdioServerParameters

        return StdioServerParameters(command=self.command[0], args=list(self.command[1:]))

    async def list_tools(self) -> None:
        from mcp import Client

        async with asyncio.timeout(self.timeout_seconds), Client(self._target()) as client:
            tools = (await client.list_tools()).tools
        self.listed = {t.name: (t.description or "", dict(t.input_schema or {})) for t in tools}

    async def call(self, tool: str, arguments: Mapping[str, Any], select: str | None) -> str:
        from mcp import Client

        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with Client(self._target(), read_timeout_seconds=self.timeout_seconds) as client:
                    result = await client.call_tool(tool, dict(arguments))
        except TimeoutError as error:
            raise ToolFailed(f"no answer within {self.timeout_seconds:g} s") from error
        except Exception as error:  # the SDK raises what its transports raise, wrapped in exception groups
            raise ToolFailed(f"unreachable or broken ({_innermost(error)})") from error
        if result.is_error:
            raise ToolFailed("the tool answered an error")
        structured = result.structured_content
        if isinstance(structured, dict) and set(structured) == {"result"} and not select:
            structured = structured["result"]  # how the SDK wraps a plain return value
        if structured is not None:
            return _value(structured, select)
        text = "".join(getattr(block, "text", "") for block in result.content)
        return _value(text, None)


def _innermost(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return type(error).__name__


def _typed(arguments: Mapping[str, str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Trigger groups are text; an MCP tool's input schema says which are numbers."""
    properties = schema.get("properties") or {}
    typed: dict[str, Any] = {}
    for name, value in arguments.items():
        kind = (properties.get(name) or {}).get("type")
        try:
            typed[name] = int(value) if kind == "integer" else float(value) if kind == "number" else value
        except ValueError as error:
            raise ToolFailed(f"argument {name}={value!r} is not a {kind}") from error
    return typed


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - _STOPWORDS


class ConfiguredTools:
    """The tools of a tools file, asked in parallel for a question."""

    def __init__(self, http_tools: Sequence[HttpTool], mcp_servers: Sequence[McpServer]) -> None:
        self.http_tools = tuple(http_tools)
        self.mcp_servers = tuple(mcp_servers)
        # One HTTP client per event loop (the CLI runs one loop per question; the server one for its life).
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._started = False

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            self._clients[loop] = httpx.AsyncClient(follow_redirects=False)
        return self._clients[loop]

    async def start(self) -> list[str]:
        """List every MCP server's tools; a server that cannot be listed keeps only its configured tools.
        Returns a note per server that failed."""
        self._started = True
        notes = []
        for server in self.mcp_servers:
            try:
                await server.list_tools()
            except Exception as error:  # a tool server down at start-up must not stop wenda
                notes.append(f"MCP server {server.name}: tools not listed ({_innermost(error)})")
                logger.warning("MCP server %s: tools not listed: %s", server.name, _innermost(error))
        return notes

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _chosen(self, question: str) -> list[tuple[str, Any]]:
        """(label, coroutine factory) for each tool the question asks for."""
        chosen: list[tuple[str, Any]] = []
        for tool in self.http_tools:
            arguments = _first_arguments(tool.triggers, question)
            if arguments is not None:
                chosen.append((tool.name, (tool, arguments)))
        words = _words(question)
        for server in self.mcp_servers:
            configured = {spec.name: spec for spec in server.configured}
            for spec in server.configured:
                arguments = _first_arguments(spec.triggers, question)
                if arguments is not None:
                    chosen.append((f"{server.name}.{spec.name}", (server, spec, arguments)))
            for listed_name, (description, schema) in server.listed.items():
                if listed_name in configured or schema.get("required"):
                    continue
                if len(words & _words(description)) >= 2:
                    chosen.append((f"{server.name}.{listed_name}", (server, McpToolSpec(listed_name), {})))
        return chosen

    async def _ask(self, target: Any) -> Fact:
        if isinstance(target[0], HttpTool):
            tool, arguments = target
            value = await tool.call(self._client(), arguments)
            return Fact(name=_fact_name(tool.fact_name, arguments, tool.name), value=value, source=tool.source)
        server, spec, arguments = target
        schema = server.listed.get(spec.name, ("", {}))[1]
        value = await server.call(spec.name, _typed(arguments, schema), spec.select)
        return Fact(
            name=_fact_name(spec.fact_name, arguments, spec.name), value=value, source=f"tool:{server.name}.{spec.name}"
        )

    async def facts_for(self, question: str) -> tuple[list[Fact], list[str]]:
        if not self._started:  # the command line never ran the server's start-up
            await self.start()
        chosen = self._chosen(question)
        if not chosen:
            return [], []
        outcomes = await asyncio.gather(*(self._ask(target) for _label, target in chosen), return_exceptions=True)
        facts: list[Fact] = []
        notes: list[str] = []
        for (label, _), outcome in zip(chosen, outcomes, strict=True):
            if isinstance(outcome, Fact):
                facts.append(outcome)
            elif isinstance(outcome, ToolFailed):
                notes.append(f"tool {label} gave no fact: {outcome}")
            elif isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                notes.append(f"tool {label} gave no fact: {type(outcome).__name__}")
                logger.warning("tool %s failed", label, exc_info=outcome)
        return facts, notes


def _first_arguments(triggers: Sequence[Trigger], question: str) -> dict[str, str] | None:
    for trigger in triggers:
        arguments = trigger.arguments(question)
        if arguments is not None:
            return arguments
    return None


def _host_allowed(url: str, allowed: Sequence[str], where: str) -> None:
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolConfigError(f"{where}: {url!r} is not an http(s) URL")
    if parts.hostname.lower() not in {h.lower() for h in allowed}:
        raise ToolConfigError(f"{where}: host {parts.hostname!r} is not in facts.tool_hosts")


def load_tools(path: Path, allowed_hosts: Sequence[str]) -> ConfiguredTools:
    """The tools of a YAML file; ``ToolConfigError`` names what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ToolConfigError(f"{path}: {error}") from error
    if not isinstance(raw, dict) or set(raw) - {"http", "mcp"}:
        raise ToolConfigError(f"{path}: expected the keys http and mcp")
    http_tools = []
    for index, item in enumerate(raw.get("http") or []):
        where = f"{path}: http[{index}]"
        if not isinstance(item, dict) or not item.get("name") or not item.get("url"):
            raise ToolConfigError(f"{where}: name and url are required")
        _host_allowed(str(item["url"]), allowed_hosts, where)
        http_tools.append(
            HttpTool(
                name=str(item["name"]),
                description=str(item.get("description", "")),
                triggers=_triggers(item.get("triggers"), where),
                url=str(item["url"]),
                select=item.get("select"),
                fact_name=str(item.get("fact_name", "")),
                timeout_seconds=float(item.get("timeout_seconds", 2.0)),
                cache_ttl_seconds=float(item.get("cache_ttl_seconds", 0.0)),
            )
        )
    servers = []
    for index, item in enumerate(raw.get("mcp") or []):
        where = f"{path}: mcp[{index}]"
        if not isinstance(item, dict) or not item.get("name") or bool(item.get("url")) == bool(item.get("command")):
            raise ToolConfigError(f"{where}: a name and either url (streamable HTTP) or command (stdio)")
        if item.get("url"):
            _host_allowed(str(item["url"]), allowed_hosts, where)
        configured = []
        for tool_index, tool in enumerate(item.get("tools") or []):
            tool_where = f"{where}.tools[{tool_index}]"
            if not isinstance(tool, dict) or not tool.get("name"):
                raise ToolConfigError(f"{tool_where}: name is required")
            configured.append(
                McpToolSpec(
                    name=str(tool["name"]),
                    triggers=_triggers(tool.get("triggers"), tool_where),
                    select=tool.get("select"),
                    fact_name=str(tool.get("fact_name", "")),
                )
            )
        command = item.get("command") or []
        servers.append(
            McpServer(
                name=str(item["name"]),
                url=str(item["url"]) if item.get("url") else None,
                command=tuple(str(c) for c in command),
                timeout_seconds=float(item.get("timeout_seconds", 5.0)),
                configured=tuple(configured),
            )
        )
    return ConfiguredTools(http_tools, servers)
