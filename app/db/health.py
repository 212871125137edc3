"""Database faults as errors a client can act on, instead of hangs and 500s.

Three parts, all for PostgreSQL (SQLite is a local file: it cannot be unreachable):

* **Bounded waits.** Every wait for the server (a statement, a commit, the pool's pre-ping) has a deadline:
  the one of the request being served (``wait_budget``, set for each HTTP request) or, off the request path,
  the statement timeout plus a margin. A connection whose deadline passes is closed, so a server that
  accepts connections and never answers costs a request its budget, not the whole outage, and never holds
  a pool connection or a thread beyond it. psycopg 3 takes a timeout on each wait; ``connection_class``
  passes ours.
* **Fail fast while down.** The first connection error or timeout marks the database down. Until it answers
  again, opening a connection fails at once (an OperationalError that ``app.errors`` answers with 503 and ``Retry-After``)
  rather than waiting out a connect timeout per request.
* **Notice recovery.** While down, a background probe pings the server on a connection of its own every
  ``probe_interval_seconds``; the first answer marks it up. Pooled connections broken by the outage are
  found by the pool's pre-ping and replaced. No restart is needed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

_budget: ContextVar[float | None] = ContextVar("wenda_db_wait_budget", default=None)
# When this thread's current wait for the server (a connect, a statement) began: a failure of an attempt that
# began before the database was last seen answering is old news, not a new outage.
_attempt = threading.local()


def _attempt_begins() -> None:
    _attempt.began = time.monotonic()


class _KnownDownError(psycopg.OperationalError):
    """Raised instead of connecting while the database is known to be down."""


@contextmanager
def wait_budget(seconds: float) -> Iterator[None]:
    """Within the block (and in threads started from it with its context), no single wait for the database
    lasts longer than ``seconds``."""
    token = _budget.set(seconds)
    try:
        yield
    finally:
        _budget.reset(token)


def current_budget() -> float | None:
    return _budget.get()


def connect_within(seconds: float, connect: Callable[[], psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """``connect()`` if it finishes within ``seconds``, else ``ConnectionTimeout`` at once.

    libpq counts its connect timeout in whole seconds, at least 2: more than a request's budget. So the
    attempt runs on a thread of its own and the request stops waiting at its deadline; an attempt that
    succeeds after it closes the connection it got. (Fail-fast while the database is down keeps such
    threads to the few requests that met the outage first.)
    """
    lock = threading.Lock()
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            connection = connect()
        except BaseException as error:
            with lock:
                outcome["error"] = error
                done.set()
            return
        with lock:
            if outcome.get("abandoned"):
                connection.close()
                return
            outcome["connection"] = connection
            done.set()

    threading.Thread(target=attempt, name="wenda-db-connect", daemon=True).start()
    done.wait(seconds)
    with lock:
        if "connection" in outcome:
            connected: psycopg.Connection[Any] = outcome["connection"]
            return connected
        if "error" in outcome:
            raise outcome["error"]
        outcome["abandoned"] = True
    raise pg_errors.ConnectionTimeout(f"could not connect to the database within {seconds:g} s")


def bound_connections(engine: Engine, connection: type[psycopg.Connection[Any]], connect_timeout: int) -> None:
    """``engine`` opens ``connection``s (bounded waits), and within the current budget when that is shorter
    than libpq's connect timeout."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        _attempt_begins()
        budget = current_budget()
        if budget is None or budget >= connect_timeout:
            return connection.connect(*cargs, **cparams)
        return connect_within(budget, lambda: connection.connect(*cargs, **cparams))


def connection_class(default_wait_seconds: float) -> type[psycopg.Connection[Any]]:
    """A psycopg connection whose every wait for the server ends by the current ``wait_budget`` (else
    ``default_wait_seconds``). On a timeout the connection is closed — its protocol state is unknown — and
    ``ConnectionTimeout`` raised, which SQLAlchemy reads as a disconnect and drops from the pool."""

    class BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            deadline = timeout if timeout is not None else (_budget.get() or default_wait_seconds)
            _attempt_begins()
            try:
                return super().wait(gen, interval=interval, timeout=deadline)
            except pg_errors._WaitTimeout:
                self.pgconn.finish()
                raise pg_errors.ConnectionTimeout(
                    f"the database did not answer within {deadline:g} s"
                ) from None

    return BoundedConnection


def _is_connection_fault(context: ExceptionContext) -> bool:
    if context.is_disconnect:
        return True
    original = context.original_exception
    # Refused, reset, timed out: no SQLSTATE, or class 08 (connection exception). A statement timeout
    # (57014) or a constraint violation says nothing about the server being reachable.
    if isinstance(original, psycopg.OperationalError):
        state = original.sqlstate
        return state is None or state.startswith("08")
    return False


def ping_database(engine: Engine, timeout: float) -> str | None:
    """None when the database answers ``SELECT 1`` within ``timeout`` (per wait), else why not."""
    try:
        with wait_budget(timeout), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return first_line or type(error).__name__
    return None


class DatabaseHealth:
    """Whether the database answers, kept from what queries meet and from a probe while it does not."""

    def __init__(
        self,
        *,
        url: str,
        connect_args: dict[str, Any],
        connection: type[psycopg.Connection[Any]],
        probe_interval_seconds: float,
        probe_timeout_seconds: float,
    ) -> None:
        self._url = url
        self._connect_args = connect_args
        self._connection = connection
        self._probe_interval = probe_interval_seconds
        self._probe_timeout = probe_timeout_seconds
        self._lock = threading.Lock()
        self._down_reason: str | None = None
        self._down_since = 0.0
        self._up_since = 0.0
        self._probe: threading.Thread | None = None
        self._closed = threading.Event()
        self._probe_engine: Engine | None = None

    # What the engine reports.

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "handle_error", self._on_error)
        event.listen(engine, "do_connect", self._on_connect)

    def _on_error(self, context: ExceptionContext) -> None:
        began = getattr(_attempt, "began", None)
        if began is not None and began < self._up_since:
            return  # an attempt from before the database answered again (a connect timing out late)
        if _is_connection_fault(context) and not isinstance(context.original_exception, _KnownDownError):
            self.mark_down(str(context.original_exception).strip().splitlines()[0])

    def _on_connect(self, _dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if self._down_reason is not None:
            raise _KnownDownError(f"the database is unavailable: {self._down_reason}")
        return None  # connect as usual

    def mark_down(self, reason: str) -> None:
        with self._lock:
            if self._down_reason is None:
                logger.error("database unavailable: %s; probing every %g s", reason, self._probe_interval)
                self._down_since = time.monotonic()
            self._down_reason = reason
            if self._probe is None and not self._closed.is_set():
                self._probe = threading.Thread(target=self._probe_until_up, name="wenda-db-probe", daemon=True)
                self._probe.start()

    def _mark_up(self) -> None:
        with self._lock:
            if self._down_reason is not None:
                logger.warning(
                    "database answers again after %.1f s", time.monotonic() - self._down_since
                )
            self._down_reason = None
            self._up_since = time.monotonic()

    # What callers ask.

    def check(self, engine: Engine) -> str | None:
        """For readiness: None when the database answers a trivial query within the probe timeout (on a
        pooled connection: cheap), else why not. Known to be down: says so without asking."""
        if self._down_reason is not None:
            return self._down_reason
        return ping_database(engine, self._probe_timeout)

    def ping(self) -> str | None:
        """Ask the server now, on a connection of its own: None when it answers, else why not."""
        return ping_database(self._engine(), self._probe_timeout)

    def _engine(self) -> Engine:
        if self._probe_engine is None:
            engine = create_engine(self._url, poolclass=NullPool, connect_args=self._connect_args)
            bound_connections(engine, self._connection, int(self._connect_args["connect_timeout"]))
            self._probe_engine = engine
        return self._probe_engine

    def _probe_until_up(self) -> None:
        try:
            while not self._closed.wait(self._probe_interval):
                if self.ping() is None:
                    self._mark_up()
                    return
        finally:
            with self._lock:
                self._probe = None
            if self._down_reason is not None and not self._closed.is_set():
                self.mark_down(self._down_reason)  # marked down again while the probe finished: go on

    def close(self) -> None:
        self._closed.set()
        probe = self._probe
        if probe is not None:
            probe.join(self._probe_interval + self._probe_timeout + 5)
        if self._probe_engine is not None:
            self._probe_engine.dispose()
