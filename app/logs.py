"""Logging, configured once per process: one JSON object per line, each with the request id it belongs to.

A request's id comes from asgi-correlation-id (the client's ``X-Request-ID`` when it is a UUID, else a new one,
sent back in the response header); a job's log lines carry ``job-<id>`` (``job_context``). What is logged at
INFO names things (ids, counts, stages, file types), never a document's text, a question, a prompt or a key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from asgi_correlation_id import CorrelationIdFilter, correlation_id
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

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


@contextmanager
def job_context(job_id: int) -> Iterator[None]:
    """Log lines written while a job runs, on this thread, carry ``job-<id>`` as their request id."""
    token = correlation_id.set(f"job-{job_id}")
    try:
        yield
    finally:
        correlation_id.reset(token)
