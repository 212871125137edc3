"""Request bodies over the upload limit are refused before they are read.

FastAPI parses a multipart form completely — spooling a file part to a temporary file on disk — before the
route runs, so a check in the route comes after the damage: a 200 MB upload would already have written
200 MB. This middleware answers 413 from the declared ``Content-Length`` without reading the body, and counts
the bytes of a body sent without one (chunked), ending the request as soon as it passes the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Multipart framing around the file: boundaries, part headers and the metadata field.
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a chunked body passes the limit; FastAPI re-raises HTTPExceptions met
    while it parses a body, so the error handlers turn it into the 413 envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))


def _message(limit: int) -> str:
    return f"the request body is larger than the {limit} byte limit"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: Callable[[], int]) -> None:
        self._app = app
        self._max_bytes = max_bytes  # read per request, so a changed setting applies at once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._max_bytes()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self._app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "message": _message(limit),
                "type": "invalid_request_error",
                "param": None,
                "code": "payload_too_large",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # The body stays unread: tell the client this connection is done with.
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
