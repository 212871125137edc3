"""Real tool servers for the fact-tool tests: an HTTP API (Starlette) and an MCP server built with the official
``mcp`` SDK, each with a working tool and tools that are slow or answer garbage. Run as a script, the MCP
server speaks stdio: ``python tests/fact_tool_servers.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mcp.server import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

RATES = {("USD", "CNY"): 7.1, ("EUR", "CNY"): 7.7}


@dataclass
class HttpCalls:
    paths: list[str] = field(default_factory=list)


def rates_app(calls: HttpCalls) -> Starlette:
    async def rate(request: Request) -> Response:
        calls.paths.append(str(request.url.path) + "?" + str(request.url.query))
        pair = (request.query_params.get("base", ""), request.query_params.get("quote", ""))
        if pair not in RATES:
            return JSONResponse({"error": "unknown pair"}, status_code=404)
        return JSONResponse({"pair": list(pair), "data": {"rate": RATES[pair]}})

    async def slow(_request: Request) -> Response:
        await asyncio.sleep(3)
        return JSONResponse({"data": {"rate": 1.0}})

    async def garbage(_request: Request) -> Response:
        return PlainTextResponse("<html>proxy error</html>", media_type="text/html")

    async def shapeless(_request: Request) -> Response:
        return JSONResponse({"data": {"rate": {"bid": 7.0, "ask": 7.2}}})

    async def down(_request: Request) -> Response:
        return JSONResponse({"error": "overloaded"}, status_code=503)

    return Starlette(
        routes=[
            Route("/rate", rate),
            Route("/slow", slow),
            Route("/garbage", garbage),
            Route("/shapeless", shapeless),
            Route("/down", down),
        ]
    )


def mcp_server() -> MCPServer:
    server = MCPServer("wenda-test-tools")

    @server.tool()
    def exchange_rate(base: str, quote: str) -> float:
        """The exchange rate from one currency to another."""
        return RATES[(base.upper(), quote.upper())]

    @server.tool()
    def shanghai_temperature() -> str:
        """The current temperature in Shanghai, in degrees Celsius."""
        return "12 °C"

    @server.tool()
    async def slow_quote(symbol: str) -> float:
        """A stock quote that takes its time."""
        await asyncio.sleep(3)
        return 1.0

    @server.tool()
    def broken_quote(symbol: str) -> float:
        """A stock quote service that fails."""
        raise RuntimeError("backend down")

    @server.tool()
    def many_quotes(symbol: str) -> list[float]:
        """Quotes, too many to be one value."""
        return [1.0, 2.0, 3.0]

    return server


if __name__ == "__main__":
    mcp_server().run("stdio")
