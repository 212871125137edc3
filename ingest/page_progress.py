"""Pages done, reported from deep inside a slow parser (OCR) to whoever started the parse.

Parsers call ``report_pages(done, total)``; ``reporting_pages(callback)`` says where that goes for the
duration of one parse. A context variable rather than a parameter threaded through every parser: only the few
parsers that work page by page care, and the parse child's callback writes to its result pipe.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

PageProgress = Callable[[int, int], None]

_callback: contextvars.ContextVar[PageProgress | None] = contextvars.ContextVar("page_progress", default=None)


def report_pages(done: int, total: int) -> None:
    callback = _callback.get()
    if callback is not None:
        callback(done, total)


@contextlib.contextmanager
def reporting_pages(callback: PageProgress | None) -> Iterator[None]:
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)
