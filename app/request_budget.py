"""Every HTTP request waits for the database at most ``database.request_timeout_seconds`` per answer.

A pure ASGI middleware rather than a dependency: the budget is a context variable (``app.db.health``), set
here for the whole request, and Starlette's thread pool copies the context into the threads that run sync
endpoints and dependencies. Work started off the request path (the worker, the answer log) keeps the long
default.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.db.health import wait_budget


class DatabaseWaitBudget:
    def __init__(self, app: ASGIApp, *, seconds: Callable[[], float]) -> None:
        self._app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        with wait_budget(self._seconds()):
            await self._app(scope, receive, send)
