"""Logging, configured once per process: one JSON object per line, each with the request id it belongs to.

A request's id comes from asgi-correlation-id (the client's ``X-Request-ID`` when it is a UUID, else a new one,
sent back in the response header); a job's log lines carry ``job-<id>`` (``job_context``). What is logged at
INFO names things (ids, counts, stages, file types), never a document's text, a question, a prompt or a key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

from asgi_correlation_id import CorrelationIdFilter, correlation_id
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]
# The settings' own variables (app.config), read by child processes that have no settings object.
_LEVEL_VARIABLE, _FORMAT_VARIABLE = "WENDA_LOG_LEVEL", "WENDA_LOG_FORMAT"

# Libraries that narrate at INFO: faiss lists every CPU build it could not load, alembic every plug-in and its
# dialect, httpx (and the copy the openai client logs under) every request to the model server, a line per
# /readyz probe. Their warnings still show; app.db.session says what a migration did.
_CHATTY_LOGGERS = ("faiss.loader", "alembic", "httpx", "httpx2")
# uvicorn adds an ANSI-coloured copy of some messages; a JSON line needs only the plain one.
_DROPPED_FIELDS = ("color_message",)


def log_handler(log_format: LogFormat, stream: object = None) -> logging.Handler:
    """A handler writing ``log_format`` lines with the request id (to stderr unless ``stream`` is given)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    # Lines outside any request or job: null in JSON, "-" in text.
    handler.addFilter(CorrelationIdFilter(default_value=None if log_format == "json" else "-"))
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "name": "logger",
                    "correlation_id": "request_id",
                },
                json_ensure_ascii=False,
                reserved_attrs=[*RESERVED_ATTRS, *_DROPPED_FIELDS],
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s")
        )
    return handler


def configure_logging(level: str, log_format: LogFormat, *, replace: bool = True) -> None:
    """The root logger's one handler; uvicorn's loggers (its access log included) propagate to it. Without
    ``replace``, a root logger that already has handlers is left as it is."""
    root = logging.getLogger()
    if root.handlers and not replace:
        return
    # Child processes that configure their own logging (the parser fork server) read the same choice.
    os.environ[_LEVEL_VARIABLE], os.environ[_FORMAT_VARIABLE] = level, log_format
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(log_handler(log_format))
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def configure_logging_from_environment() -> None:
    """A child process's logging, as its parent configured its own (``configure_logging``)."""
    log_format = os.environ.get(_FORMAT_VARIABLE, "json")
    configure_logging(
        os.environ.get(_LEVEL_VARIABLE, "INFO"), "text" if log_format == "text" else "json", replace=True
    )


def current_log_id() -> str | None:
    """The request id of the lines logged here now (a request's, a job's), to hand to another process."""
    return correlation_id.get()


@contextmanager
def log_context(log_id: str | None) -> Iterator[None]:
    """Lines logged in the block, on this thread, carry ``log_id`` as their request id."""
    token = correlation_id.set(log_id)
    try:
        yield
    finally:
        correlation_id.reset(token)


def job_context(job_id: int) -> AbstractContextManager[None]:
    """Lines logged while a job runs, on this thread, carry ``job-<id>`` as their request id."""
    return log_context(f"job-{job_id}")
