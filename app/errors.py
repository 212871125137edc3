"""The one error envelope, ``{"error": {"message", "type", "param", "code"}}``, and the table that fills it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.rag.errors import (
    AdapterRejectedError,
    ConflictError,
    DocumentParseError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    UnsupportedFileTypeError,
    UpstreamBadResponseError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    WendaError,
)

logger = logging.getLogger(__name__)

_INTERNAL = "internal server error; see the server log"

STATUS_OF: dict[type[WendaError], int] = {
    UpstreamBadResponseError: 502,
    UpstreamUnavailableError: 503,
    UpstreamTimeoutError: 504,
    UpstreamError: 502,
    InvalidInputError: 400,
    NotFoundError: 404,
    ConflictError: 409,
    AdapterRejectedError: 422,
    PayloadTooLargeError: 413,
    UnsupportedFileTypeError: 415,
    DocumentParseError: 422,
    NotReadyError: 503,
}


def envelope(
    status: int, message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body)


def _status_for(error: WendaError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


def error_body(error: WendaError) -> tuple[int, dict[str, object]]:
    """The status and envelope for a domain error; also sent as the error event of a stream."""
    status = _status_for(error)
    if status < 500:
        kind = "invalid_request_error"
    elif status in (502, 504):
        kind = "upstream_error"
    else:
        kind = "service_unavailable"
    return status, {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}
    }


def stream_error_body(error: Exception) -> dict[str, object]:
    """The envelope for an error met after a stream's first byte, sent as the stream's last event; like every
    5xx body it never carries the exception's text."""
    if isinstance(error, WendaError):
        return error_body(error)[1]
    return {"error": {"message": _INTERNAL, "type": "server_error", "param": None, "code": "internal_error"}}


async def _wenda_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, WendaError)
    status, body = error_body(error)
    return JSONResponse(status_code=status, content=body)


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _param_and_message(first: Mapping[str, Any]) -> tuple[str | None, str]:
    """The field a validation error is about, and a message naming it."""
    location = [str(part) for part in first.get("loc", ())]
    # Only the first part is where the value came from; a field may itself be called "query".
    where = location.pop(0) if location and location[0] in _LOCATIONS else ""
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return None, f"the request body is not valid JSON: {message}"
    if not location:
        return None, f"request {where or 'input'}: {message}" if where else message
    param = ".".join(location)
    return param, f"{param}: {message}"


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    param, message = _param_and_message(first)
    return envelope(422, message, "invalid_request_error", param=param, code="validation_error")


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = "payload_too_large" if error.status_code == 413 else f"http_{error.status_code}"
    return envelope(error.status_code, str(error.detail), "invalid_request_error", code=code)


# What SQLAlchemy raises when the database cannot be reached or does not answer in time (refused, reset,
# our wait deadline, the pool's checkout timeout) and SQLite's "database is locked" past its busy timeout.
_DATABASE_FAULTS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)


def database_unavailable(retry_after: int) -> JSONResponse:
    response = envelope(
        503,
        "the database is unavailable or did not answer in time; retry later",
        "service_unavailable",
        code="database_unavailable",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _retry_after(request: Request) -> int:
    components = getattr(request.app.state, "components", None)
    return components.settings.database.retry_after_seconds if components is not None else 5


async def _database_fault(request: Request, error: Exception) -> JSONResponse:
    # The first line only: the rest of a driver's message can carry SQL and parameters.
    logger.warning("database fault: %s", str(error).strip().splitlines()[0] if str(error).strip() else error)
    return database_unavailable(_retry_after(request))


async def _unexpected_error(_request: Request, error: Exception) -> JSONResponse:
    # Never echo exception text: it can carry paths, SQL or document content.
    logger.exception("unhandled error", exc_info=error)
    return envelope(500, _INTERNAL, "server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WendaError, _wenda_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for fault in _DATABASE_FAULTS:
        app.add_exception_handler(fault, _database_fault)
    app.add_exception_handler(Exception, _unexpected_error)
