"""Run ``parse_document`` in a child process with memory and CPU limits.

PDF, DOCX and HTML parsers can be driven into unbounded memory use or near-endless loops by a crafted or
merely broken file. In a child process a wall-clock timeout, ``RLIMIT_AS`` and ``RLIMIT_CPU`` contain that,
and whatever happens there reaches the caller as a ``DocumentParseError`` with a message the user can act on.

Children come from a ``multiprocessing`` fork server that has imported the parser libraries once, so a parse
costs a fork instead of an interpreter start and ~0.3 s of imports, and nothing is forked from the caller's
own (multi-threaded) process. Each child sets its own limits before it touches the file, parses, and sends one
message through a one-way pipe: the parsed document as JSON, or ``{"error": message}`` for a
``DocumentParseError``. JSON rather than pickle, because the child is the process a hostile file may have
taken over, and unpickling can run code. Anything else (a signal, a non-zero exit, no message) is the
parent's to explain from the exit code.

A child starts as a copy of the fork server (~60 MiB of address space with the parser libraries) plus the
file, and then holds its text and the encoded result as well, so ``memory_mb`` should be about four times the
largest upload plus ~100 MiB.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing import connection, process
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, Heading, ParsedDocument

if sys.platform != "win32":
    import resource
    from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_MIB = 1024 * 1024
# What the fork server imports once, so that children start with it: this module (the child's code) and the
# parsers with their libraries.
_PRELOAD = ["ingest.sandbox", "ingest.parsing"]
# The child exits with this when it catches MemoryError: printing a traceback may itself need memory.
_EXIT_OUT_OF_MEMORY = 3
# ... and with this when it is over the memory limit before it starts to parse.
_EXIT_OVER_LIMIT_AT_START = 4
# How long a child that has sent its result may take to exit, and how long a killed one may take to be reaped,
# before the parent stops waiting for it.
_EXIT_GRACE_SECONDS = 5.0
_LONGEST_POLL_SECONDS = 86_400.0

# multiprocessing reads a child's exit code from a pipe that holds it once, and Process.start() polls every
# child of this process. A start in one thread racing the wait in another reads a code twice: the second reader
# gets 255, or takes an ended child for a running one (measured: 1 to 4 in 200 parses from 8 threads). Starting
# children and reading exit codes under one lock prevents that.
_children_lock = threading.Lock()


def parse_in_subprocess(
    data: bytes, file_type: FileType, *, timeout_seconds: float, memory_mb: int
) -> ParsedDocument:
    """Parse ``data`` in a child process limited to ``timeout_seconds`` and ``memory_mb`` MiB.

    Raises ``DocumentParseError`` for everything the file can cause: its own parse errors, a timeout, running
    out of memory or CPU time, a crash. Failing to start a process at all (``OSError``) is the server's
    problem, not the file's, and propagates so that the caller can retry. Safe to call from several threads.
    """
    if timeout_seconds <= 0 or memory_mb <= 0:
        raise ValueError("timeout_seconds and memory_mb must be positive")
    memory_bytes = memory_mb * _MIB
    # CPU time is a second line of defence behind the wall-clock timeout: it also stops a child whose threads
    # burn several cores at once. Receiving the file counts too, hence the extra second.
    cpu_seconds = math.ceil(timeout_seconds) + 1
    parser_context = _parser_context()
    receiver, sender = parser_context.Pipe(duplex=False)
    child = _parser_process(parser_context)(
        target=_parse_in_child,
        args=(sender, data, file_type.value, memory_bytes, cpu_seconds),
        name=f"parse-{file_type.value}",
        daemon=True,
    )
    with receiver:
        try:
            with _children_lock:
                child.start()
        finally:
            # The child has its own copy; while ours is open, the receiver cannot see the child die.
            sender.close()
        replied = False
        try:
            replied = _await_reply(receiver, timeout_seconds)
            if not replied:
                logger.warning("parsing a %s file timed out after %s s", file_type.value, timeout_seconds)
                raise DocumentParseError(
                    f"parsing took longer than {timeout_seconds:g} s; the file may be damaged or too complex"
                )
            payload = _receive(receiver, max_bytes=memory_bytes)
        finally:
            exitcode = _end(child, grace_seconds=_EXIT_GRACE_SECONDS if replied else 0)
    if payload is not None:
        return _document_from_json(payload)
    if exitcode == _EXIT_OVER_LIMIT_AT_START:
        logger.warning(
            "the parser process for a %s file was over memory_mb=%s before parsing: the %.0f MiB file plus "
            "~60 MiB of interpreter and parser libraries",
            file_type.value,
            memory_mb,
            len(data) / _MIB,
        )
    elif exitcode == 0:
        # A child that ends normally without a result is a bug on our side, not something the user did.
        logger.error("the parser process for a %s file exited without sending a result", file_type.value)
    else:
        logger.warning("the parser process for a %s file exited with status %s", file_type.value, exitcode)
    raise DocumentParseError(_exit_message(exitcode, memory_mb=memory_mb, cpu_seconds=cpu_seconds))


@functools.cache
def _parser_context() -> BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        logger.warning(
            "no fork server on this platform: every parse starts a new interpreter, "
            "without memory or CPU limits if the platform has no resource limits"
        )
        return multiprocessing.get_context("spawn")
    parser_context = multiprocessing.get_context("forkserver")
    # The fork server is one per process, started by its first user; this takes effect if that is us. The
    # default, ["__main__"], would import the caller's main script there (in Python 3.11 it silently never
    # does: CPython gh-126631), which we do not need.
    parser_context.set_forkserver_preload(_PRELOAD)
    return parser_context


def _parser_process(parser_context: BaseContext) -> type[process.BaseProcess]:
    # _ParserPopen copies CPython 3.11's private _launch; on any other version the stock process is used:
    # correct, only slower under a main script that is expensive to import.
    if (
        sys.platform != "win32"
        and sys.version_info[:2] == (3, 11)
        and parser_context.get_start_method() == "forkserver"
    ):
        return _ParserProcess
    return parser_context.Process  # type: ignore[attr-defined,no-any-return]


if sys.platform != "win32":

    class _ParserPopen(popen_forkserver.Popen):
        """The fork server's ``Popen``, less re-running the caller's ``__main__`` in every child.

        multiprocessing makes each child re-execute the parent's main module (as ``__mp_main__``) so that
        functions defined there can be unpickled. The fork server was meant to do that once, but cannot in
        Python 3.11 (CPython gh-126631, gh-137996), so for the ``wenda`` script every parse paid ~0.15 s of
        importing ``app.cli`` and pydantic-settings, and a main read from stdin made every parse fail. The
        child runs a function of this module and needs nothing from ``__main__``. ``_launch`` is CPython
        3.11's with the two main-module keys left out of the preparation data.
        """

        def _launch(self, process_obj: process.BaseProcess) -> None:
            prep_data = spawn.get_preparation_data(process_obj.name)
            prep_data.pop("init_main_from_name", None)
            prep_data.pop("init_main_from_path", None)
            buf = io.BytesIO()
            context.set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buf)
                reduction.dump(process_obj, buf)
            finally:
                context.set_spawning_popen(None)
            self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
            # The child watches this duplicate of the data pipe to notice that its parent is gone.
            parent_w = os.dup(w)
            self.finalizer = util.Finalize(self, _close_fds, (parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    def _close_fds(*fds: int) -> None:
        for fd in fds:
            os.close(fd)

    class _ParserProcess(context.ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: process.BaseProcess) -> popen_forkserver.Popen:
            return _ParserPopen(process_obj)


def _await_reply(receiver: Connection, timeout_seconds: float) -> bool:
    # True on a message and on end-of-file alike: the child has finished either way. One poll() waits at most
    # ~24 days (a C int of milliseconds), and the setting has no upper bound.
    deadline = time.monotonic() + timeout_seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if receiver.poll(min(remaining, _LONGEST_POLL_SECONDS)):
            return True
    return False


def _receive(receiver: Connection, *, max_bytes: int) -> bytes | None:
    # The child's whole result lives inside its address-space limit, so a longer message is a lie; refusing it
    # keeps a subverted child from making the parent allocate what it claims.
    try:
        return receiver.recv_bytes(max_bytes)
    # EOFError: the child closed the pipe without a message. OSError: it died partway through one.
    except (EOFError, OSError):
        return None


def _end(child: process.BaseProcess, *, grace_seconds: float) -> int | None:
    """Give ``child`` ``grace_seconds`` to exit, kill it if it has not, and return its exit code.

    None means that even a killed child could not be reaped in time: something is wrong on the machine, and
    the child is left to multiprocessing's own clean-up.
    """
    if not connection.wait([child.sentinel], grace_seconds):
        child.kill()
        if not connection.wait([child.sentinel], _EXIT_GRACE_SECONDS):
            logger.error("the parser process %s did not exit after SIGKILL", child.pid)
            return None
    with _children_lock:
        exitcode = child.exitcode
        if exitcode is not None:
            child.close()
    return exitcode


def _exit_message(exitcode: int | None, *, memory_mb: int, cpu_seconds: int) -> str:
    """Explain to the user why a child that sent no result ended the way it did."""
    if exitcode in (_EXIT_OUT_OF_MEMORY, _EXIT_OVER_LIMIT_AT_START):
        return f"parsing needed more than {memory_mb} MiB of memory; the file may be too large or too complex"
    if exitcode == -signal.SIGXCPU:
        return f"parsing used more than {cpu_seconds} s of CPU time; the file may be damaged or too complex"
    if exitcode == -signal.SIGKILL:
        # Our own kill after the hard CPU limit, or the kernel's out-of-memory killer.
        return (
            "the parser was stopped for using too much memory or CPU time; "
            "the file may be damaged or too complex"
        )
    if exitcode == 0:
        return "the parser returned an unreadable result; please report this file"
    if exitcode is not None and exitcode < 0:
        return f"the parser crashed ({_signal_name(-exitcode)}); the file may be damaged"
    status = "unknown" if exitcode is None else str(exitcode)
    return f"the parser failed unexpectedly (exit status {status}); the file may be damaged"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _document_from_json(payload: bytes) -> ParsedDocument:
    try:
        result = json.loads(payload)
        if not isinstance(result, dict):
            raise TypeError(f"expected a JSON object, got {type(result).__name__}")
        if "error" in result:
            message = result["error"]
            raise DocumentParseError(message if isinstance(message, str) else "the file could not be parsed")
        return ParsedDocument(
            text=_typed(result["text"], str),
            file_type=FileType(result["file_type"]),
            title=_typed(result["title"], str),
            headings=tuple(
                Heading(start=_typed(start, int), level=_typed(level, int), title=_typed(title, str))
                for start, level, title in result["headings"]
            ),
        )
    except DocumentParseError:
        raise
    # A well-formed message is ours to produce; anything else is a bug on our side, not the user's doing.
    except (ValueError, TypeError, KeyError) as exc:
        logger.error("the parser process returned an unreadable result: %s", exc)
        raise DocumentParseError("the parser returned an unreadable result; please report this file") from exc


def _typed(value: Any, kind: type[_T]) -> _T:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_in_child(
    result: Connection, data: bytes, file_type: str, memory_bytes: int, cpu_seconds: int
) -> None:
    """The child's whole life: limit itself, parse, send one message."""
    if _missed_preload():
        logger.warning(
            "the parser fork server could not import ingest.parsing; install wenda or set PYTHONPATH"
        )
    # The child begins as a copy of the fork server holding the file. If that alone is over the limit, parsing
    # would fail or not depending on whether it happens to need a fresh page; say so every time instead.
    size = _address_space_bytes()
    if size is not None and size >= memory_bytes:
        os._exit(_EXIT_OVER_LIMIT_AT_START)
    try:
        _apply_limits(memory_bytes, cpu_seconds)
        from ingest.parsing import parse_document

        try:
            document = parse_document(data, FileType(file_type))
        except DocumentParseError as exc:
            outcome: dict[str, object] = {"error": exc.message}
        else:
            outcome = {
                "text": document.text,
                "file_type": document.file_type.value,
                "title": document.title,
                "headings": [[h.start, h.level, h.title] for h in document.headings],
            }
        # ensure_ascii=False keeps Chinese text at 3 bytes a character instead of 12. Any lone surrogate that
        # slipped through becomes a \udxxx escape, which JSON reads back as the same character.
        result.send_bytes(json.dumps(outcome, ensure_ascii=False).encode("utf-8", "backslashreplace"))
    except MemoryError:
        os._exit(_EXIT_OUT_OF_MEMORY)


def _missed_preload() -> bool:
    # Python 3.11's fork server ignores the parent's sys.path (CPython gh-117378) and hides import errors: it
    # finds this package only if it is installed, on PYTHONPATH or in the directory of the first parse. If it
    # did not, every child imports the parsers again, and only a child can tell.
    return (
        sys.platform != "win32"
        and isinstance(process.current_process(), _ParserProcess)
        and "ingest.parsing" not in sys.modules
    )


def _address_space_bytes() -> int | None:
    # What RLIMIT_AS is compared with. Linux only; elsewhere the limit alone has to do.
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _apply_limits(memory_bytes: int, cpu_seconds: int) -> None:
    if sys.platform == "win32":
        return
    _lower_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    # SIGXCPU at the soft limit, SIGKILL a second later if the child ignores it.
    _lower_limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
    # A core file of a crashed parser would hold the user's document, and could fill the disk.
    _lower_limit(resource.RLIMIT_CORE, 0, 0)


def _lower_limit(which: int, soft: int, hard: int) -> None:
    # Raising a hard limit is not allowed; where the inherited limit is lower, it wins.
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))
