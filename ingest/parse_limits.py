"""Run ``parse_document`` in a child process under time, memory and CPU limits.

PDF, DOCX and HTML parsers can be driven into unbounded memory use or near-endless loops by a crafted or
merely broken file. In a child process a wall-clock timeout, ``RLIMIT_AS`` and ``RLIMIT_CPU`` contain that,
and whatever happens there reaches the caller as a ``DocumentParseError`` with a message the user can act on.

These are limits, not a security sandbox: the child runs as the caller's user, with its files, network and
environment. A file that takes a parser over gains what the worker already has; what it cannot take is the
worker's memory, CPU or time.

Children come from a fork server of this module's own: ``python -m ingest.parse_limits``, started with
``subprocess`` by each process on its first parse (~0.3 s of imports, once) and ended when that process
closes its end of a pipe, by exiting or otherwise. It imports the common parsers' libraries once (text,
Markdown, HTML, DOCX; the other formats' come in the child that needs them, see ``ingest.parsing``), is
single-threaded and forks with ``os.fork``, so a parse costs a fork instead of an interpreter start, and nothing is forked
from the caller's own multi-threaded process. Only public APIs are used, and it works in daemonic processes
such as a Celery prefork worker's, where ``multiprocessing`` refuses to start children. billiard's fork
server, which would allow them, reports every child killed by a signal as exit status 255 and re-runs the
caller's main script in every child (~0.3 s per parse under the ``wenda`` script).

For each parse the caller sends the server, over a Unix socket, a JSON request and three pipe ends: the
child reads the file from the first and writes its result to the second, and the server writes the child's
pid to the third, and once it has reaped the child, its exit status. The child sets its limits before it
reads the file, parses, writes one JSON message (the parsed document, or ``{"error": message}`` for a
``DocumentParseError``) and exits 0. JSON rather than pickle, because the child is the process a hostile file
may have taken over, and unpickling can run code. Anything else (a signal, another exit status) is the
caller's to explain from the exit status.

POSIX only. A child starts as a copy of the server (~60 MiB of address space with the parser libraries) and
then holds the file, its text and the encoded result, so ``memory_mb`` should be about four times the largest
upload plus ~100 MiB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import json
import logging
import math
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from types import FrameType, TracebackType
from typing import Any, TypeVar

from app.logs import configure_logging_from_environment, current_log_id, log_context
from app.rag.errors import DocumentParseError
from app.rag.types import FileType, Heading, ParsedDocument
from ingest.page_progress import PageProgress

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_MIB = 1024 * 1024
# The child exits with this when it catches MemoryError: printing a traceback may itself need memory.
_EXIT_OUT_OF_MEMORY = 3
# ... and with this when it would be over the memory limit before it starts to parse.
_EXIT_OVER_LIMIT_AT_START = 4
# How long a child that has sent its result may take to exit, and how long a killed one may take to be reaped,
# before the caller stops waiting for it.
_EXIT_GRACE_SECONDS = 5.0
# How long the server may take to answer a request with a pid; the first includes starting it (~0.5 s, more
# on a busy machine).
_SERVER_REPLY_SECONDS = 60.0
# One wait of a selector takes at most ~24 days (a C int of milliseconds), and the setting has no upper bound.
_LONGEST_POLL_SECONDS = 86_400.0
# A pipe holds 64 KiB on Linux; larger writes to a full one only come back partial.
_PIPE_CHUNK_BYTES = _MIB
# A progress record is this byte, "<done> <total>", and a newline. The result, which comes last, is JSON, whose
# encoding never holds a NUL, so the first byte tells the two apart.
_PROGRESS_TAG = b"\x00"
# A request is a few dozen bytes of JSON; anything longer is not ours.
_MAX_REQUEST_BYTES = 4096
# What the server writes to a parse's status pipe: the child's pid (or -errno if it could not fork), then its
# exit status as os.waitstatus_to_exitcode gives it (negative: killed by that signal).
_STATUS_WORD = struct.Struct("q")
# What _read_status_word returns for end-of-file, which no pid or exit status can be.
_SERVER_GONE = -(2**63)
# The server's stdin: the other end is the caller's, and reaches end-of-file when the caller is gone.
_ALIVE_FD = 0


def parse_in_subprocess(
    data: bytes,
    file_type: FileType,
    *,
    timeout_seconds: float,
    memory_mb: int,
    on_pages: PageProgress | None = None,
) -> ParsedDocument:
    """Parse ``data`` in a child process limited to ``timeout_seconds`` and ``memory_mb`` MiB.

    ``on_pages(done, total)`` is called, in this process, as a slow parser (OCR) finishes pages; whatever it
    raises ends the parse.

    Raises ``DocumentParseError`` for everything the file can cause: its own parse errors, a timeout, running
    out of memory or CPU time, a crash. Failing to start a process at all, or the fork server dying, is the
    server's problem, not the file's: that is an ``OSError``, and propagates so that the caller can retry.
    Safe to call from several threads and from daemonic processes.
    """
    if timeout_seconds <= 0 or memory_mb <= 0:
        raise ValueError("timeout_seconds and memory_mb must be positive")
    memory_bytes = memory_mb * _MIB
    # CPU time is a second line of defence behind the wall-clock timeout: it also stops a child whose threads
    # burn many cores at once, and one whose server died. OCR runs its engine on two threads, so a legitimate
    # parse may use twice its wall time; receiving the file counts too, hence the extra second.
    cpu_seconds = 2 * math.ceil(timeout_seconds) + 1
    request = _ParseRequest(
        file_type=file_type.value,
        size=len(data),
        memory_bytes=memory_bytes,
        cpu_seconds=cpu_seconds,
        log_id=current_log_id(),
    )
    with _fork_server.start_parse(request) as child:
        reply: bytes | None = None
        try:
            reply = child.exchange(
                data, timeout_seconds=timeout_seconds, max_bytes=memory_bytes, on_pages=on_pages
            )
            if reply is None:
                logger.warning("parsing a %s file timed out after %s s", file_type.value, timeout_seconds)
                raise DocumentParseError(
                    f"parsing took longer than {timeout_seconds:g} s; the file may be damaged or too complex"
                )
        finally:
            exitcode = child.end(grace_seconds=_EXIT_GRACE_SECONDS if reply is not None else 0)
    # A child that did not exit 0 may have been stopped halfway through its message; its status says more.
    if exitcode == 0 and reply:
        return _document_from_json(reply)
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


@dataclasses.dataclass(frozen=True)
class _ParseRequest:
    """What the server's child needs besides the file: sent to the server as JSON."""

    file_type: str
    size: int
    memory_bytes: int
    cpu_seconds: int
    # The caller's request id (a job's ``job-<id>``): the child's log lines carry it too.
    log_id: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, message: bytes) -> _ParseRequest:
        fields = json.loads(message)
        return cls(
            file_type=_typed(fields["file_type"], str),
            size=_typed(fields["size"], int),
            memory_bytes=_typed(fields["memory_bytes"], int),
            cpu_seconds=_typed(fields["cpu_seconds"], int),
            log_id=_typed(fields["log_id"], str) if fields.get("log_id") is not None else None,
        )


class _ForkServer:
    """This process's fork server, seen from here: started on first use, and again after it has died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        # The server reads this pipe's other end and exits when it closes: when this process is gone.
        self._alive_fd: int | None = None

    def start_parse(self, request: _ParseRequest) -> _ParseChild:
        """Have the server fork a child for ``request``; raise ``OSError`` when that cannot be done."""
        data_r, data_w = os.pipe()
        result_r, result_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            try:
                control = self._running_control()
                try:
                    socket.send_fds(control, [request.to_json()], [data_r, result_w, status_w])
                # The server's end is closed: it exited since we looked.
                except (ConnectionRefusedError, BrokenPipeError) as exc:
                    raise OSError(errno.EPIPE, self._gone_message()) from exc
            finally:
                # The server has its own copies now; while ours are open, we could not see the child end.
                for fd in (data_r, result_w, status_w):
                    os.close(fd)
            pid = _read_status_word(status_r, _SERVER_REPLY_SECONDS)
            if pid is None:
                # A child it forks later finds its file pipe closed, and exits.
                raise OSError(
                    errno.ETIMEDOUT,
                    f"the parser fork server did not answer within {_SERVER_REPLY_SECONDS:g} s",
                )
            if pid == _SERVER_GONE:
                raise OSError(errno.EPIPE, self._gone_message())
            if pid < 0:
                raise OSError(-pid, f"the parser fork server could not start a process: {os.strerror(-pid)}")
        except BaseException:
            for fd in (data_w, result_r, status_r):
                os.close(fd)
            raise
        return _ParseChild(pid, control, data_w=data_w, result_r=result_r, status_r=status_r)

    def stop(self) -> None:
        """Stop the server now rather than when this process exits; the next parse starts another."""
        with self._lock:
            process = self._process
            self._close()
        if process is not None:
            # It exits as soon as it sees its pipe close, leaving any children to finish on their own.
            process.wait(_EXIT_GRACE_SECONDS)

    def forget(self) -> None:
        """In a forked copy of this process: let go of the parent's server and start our own when needed."""
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._close()

    def _running_control(self) -> socket.socket:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                if self._process is not None:
                    logger.warning("the parser fork server exited with status %s", self._process.returncode)
                self._close()
                self._start()
            assert self._control is not None
            return self._control

    def _start(self) -> None:
        control, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        alive_r, alive_w = os.pipe()
        try:
            self._process = subprocess.Popen(
                # -P: a module in a working directory must not stand in for ours or a library's.
                [sys.executable, "-P", "-m", __name__, str(server_end.fileno())],
                stdin=alive_r,
                pass_fds=[server_end.fileno()],
                env=_server_environment(),
                # Not the caller's working directory, which the server would otherwise keep in use.
                cwd="/",
            )
        except BaseException:
            control.close()
            os.close(alive_w)
            raise
        finally:
            server_end.close()
            os.close(alive_r)
        self._control, self._alive_fd = control, alive_w

    def _close(self) -> None:
        # The process itself is not waited for: after a fork it is not ours, and otherwise it has exited.
        if self._control is not None:
            self._control.close()
        if self._alive_fd is not None:
            os.close(self._alive_fd)
        self._process, self._control, self._alive_fd = None, None, None

    def _gone_message(self) -> str:
        with self._lock:
            process = self._process
        if process is None:
            return "the parser fork server was stopped"
        try:
            # The pipe closes a moment before the process ends.
            returncode = process.wait(1)
        except subprocess.TimeoutExpired:
            return "the parser fork server refused a request"
        return f"the parser fork server exited with status {returncode}; see its messages above"


def _server_environment() -> dict[str, str]:
    # The server imports what this process would: the same ingest and app packages and libraries, also when
    # they are found through a path that only this process added (a test runner, a script's own directory).
    return {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(entry) for entry in sys.path)}


class _ParseChild:
    """One child of the fork server, seen from the caller: its pid and the caller's ends of its pipes."""

    def __init__(
        self, pid: int, control: socket.socket, *, data_w: int, result_r: int, status_r: int
    ) -> None:
        self.pid = pid
        self._control = control
        self._data_w: int | None = data_w
        self._result_r = result_r
        self._status_r = status_r
        self._exitcode: int | None = None
        self._server_gone = False

    def __enter__(self) -> _ParseChild:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_data()
        os.close(self._result_r)
        os.close(self._status_r)

    def exchange(
        self, data: bytes, *, timeout_seconds: float, max_bytes: int, on_pages: PageProgress | None = None
    ) -> bytes | None:
        """Send ``data`` to the child and collect what it writes until it closes its end: progress records,
        each passed to ``on_pages`` as it arrives, then the result, which is returned.

        None when ``timeout_seconds`` pass first. A reply over ``max_bytes`` is a ``DocumentParseError``: the
        child's whole result lives inside its address-space limit, so a longer one is a lie, and refusing it
        keeps a subverted child from making the caller allocate what it sends. An ``OSError`` when the server
        dies first.
        """
        deadline = time.monotonic() + timeout_seconds
        unsent = memoryview(data)
        received: list[bytes] = []
        received_bytes = 0
        pending = b""  # what has come before the result: progress records, the last perhaps cut short
        with selectors.DefaultSelector() as selector:
            if unsent and self._data_w is not None:
                # Without this, a write to a pipe that has some room but less than the chunk would block.
                os.set_blocking(self._data_w, False)
                selector.register(self._data_w, selectors.EVENT_WRITE)
            else:
                self._close_data()
            selector.register(self._result_r, selectors.EVENT_READ)
            # Watched as well: if the server dies, its end is the only one that closes while the child runs on.
            selector.register(self._status_r, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(min(remaining, _LONGEST_POLL_SECONDS)):
                    if key.fd == self._status_r:
                        self._exit_status(0)
                        selector.unregister(self._status_r)
                    elif key.fd == self._data_w:
                        unsent = self._send_some(unsent)
                        if not unsent:
                            selector.unregister(key.fd)
                            self._close_data()
                    else:
                        chunk = os.read(self._result_r, _PIPE_CHUNK_BYTES)
                        if not chunk:
                            return b"".join(received)
                        received_bytes += len(chunk)
                        if received_bytes > max_bytes:
                            logger.error("the parser process sent more than %s bytes", max_bytes)
                            raise DocumentParseError(
                                "the parser returned an unreadable result; please report this file"
                            )
                        if received:
                            received.append(chunk)
                        else:
                            pending = _take_progress(pending + chunk, on_pages)
                            if pending and not pending.startswith(_PROGRESS_TAG):
                                received.append(pending)
        return None

    def end(self, *, grace_seconds: float) -> int | None:
        """Give the child ``grace_seconds`` to exit, have it killed if it has not, and return its exit status.

        None means that even a killed child was not reaped in time, or that the server is gone and this was
        already reported. An ``OSError`` means that the server died, and with it the only process that could
        tell.
        """
        if self._server_gone:
            return None
        exitcode = self._exit_status(grace_seconds)
        if exitcode is not None:
            return exitcode
        # The server kills it rather than we: until it has reaped the child, the pid cannot name another
        # process, whereas ours could be a stranger's by the time the signal arrives.
        # OSError: the server is gone, and the next read says so.
        with contextlib.suppress(OSError):
            socket.send_fds(self._control, [json.dumps({"kill": self.pid}).encode()], [])
        exitcode = self._exit_status(_EXIT_GRACE_SECONDS)
        if exitcode is None:
            logger.error("the parser process %s did not exit after SIGKILL", self.pid)
        return exitcode

    def _send_some(self, unsent: memoryview) -> memoryview:
        assert self._data_w is not None
        try:
            return unsent[os.write(self._data_w, unsent[:_PIPE_CHUNK_BYTES]) :]
        except BlockingIOError:
            return unsent
        # The child stopped reading because it ended; its exit status says why.
        except BrokenPipeError:
            return unsent[:0]

    def _exit_status(self, timeout_seconds: float) -> int | None:
        if self._exitcode is None:
            word = _read_status_word(self._status_r, timeout_seconds)
            if word == _SERVER_GONE:
                self._server_gone = True
                # Orphaned, the child runs on until it finishes (its result then has nowhere to go) or reaches
                # its CPU limit.
                raise OSError(errno.EPIPE, "the parser fork server stopped while a file was being parsed")
            self._exitcode = word
        return self._exitcode

    def _close_data(self) -> None:
        if self._data_w is not None:
            os.close(self._data_w)
            self._data_w = None


def _take_progress(pending: bytes, on_pages: PageProgress | None) -> bytes:
    """Pass each whole progress record at the start of ``pending`` to ``on_pages``; return the rest."""
    while pending.startswith(_PROGRESS_TAG) and (end := pending.find(b"\n")) >= 0:
        record, pending = pending[1:end], pending[end + 1 :]
        done, _, total = record.partition(b" ")
        if on_pages is not None and done.isdigit() and total.isdigit():
            on_pages(int(done), int(total))
    return pending


def _read_status_word(fd: int, timeout_seconds: float) -> int | None:
    """The next word the server wrote to a status pipe, ``_SERVER_GONE`` at its end, None after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    word = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(word) < _STATUS_WORD.size:
            remaining = deadline - time.monotonic()
            if not selector.select(max(0.0, min(remaining, _LONGEST_POLL_SECONDS))):
                if remaining <= 0:
                    return None
                continue
            chunk = os.read(fd, _STATUS_WORD.size - len(word))
            if not chunk:
                return _SERVER_GONE
            word += chunk
    value: int = _STATUS_WORD.unpack(word)[0]
    return value


def _exit_message(exitcode: int | None, *, memory_mb: int, cpu_seconds: int) -> str:
    """Explain to the user why a child that sent no result ended the way it did."""
    if exitcode in (_EXIT_OUT_OF_MEMORY, _EXIT_OVER_LIMIT_AT_START):
        return f"parsing needed more than {memory_mb} MiB of memory; the file may be too large or too complex"
    if exitcode == -signal.SIGXCPU:
        return f"parsing used more than {cpu_seconds} s of CPU time; the file may be damaged or too complex"
    if exitcode == -signal.SIGKILL:
        # The kernel's, after the hard CPU limit, or its out-of-memory killer's.
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
            metadata=tuple((_typed(key, str), _typed(value, str)) for key, value in result["metadata"]),
            ocr_pages=tuple(_typed(page, int) for page in result["ocr_pages"]),
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


def _serve(control_fd: int) -> None:
    """The fork server's life: fork a child for each request, reap it, report its exit status."""
    # Imported once here, so that every child starts with the parsers loaded.
    importlib.import_module("ingest.parsing")
    # Its lines (and its children's) in the caller's format, on the caller's stderr.
    configure_logging_from_environment()
    # A crashed parser's core file would hold the user's document, and could fill the disk; children inherit
    # this from their first instruction on.
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    # Ctrl-C and a service manager's stop signal reach the whole process group. The server ends when its
    # caller does, and a parse under way must not fail as if the file had crashed the parser.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    # A handler, not SIG_IGN: with SIGCHLD ignored the kernel reaps children itself, and their exit statuses,
    # which tell a crash from a limit, are lost (billiard's fork server reports them all as 255 for that).
    signal.signal(signal.SIGCHLD, _wake_up)
    status_fds: dict[int, int] = {}
    control = socket.socket(fileno=control_fd)
    with control, selectors.DefaultSelector() as selector:
        selector.register(_ALIVE_FD, selectors.EVENT_READ)
        selector.register(wakeup_r, selectors.EVENT_READ)
        selector.register(control, selectors.EVENT_READ)
        own_fds = [control_fd, wakeup_r, wakeup_w, *_selector_fds(selector)]
        while True:
            for key, _ in selector.select():
                if key.fd == _ALIVE_FD:
                    if not os.read(_ALIVE_FD, 1):
                        return
                elif key.fd == wakeup_r:
                    _drain(wakeup_r)
                    _reap(status_fds)
                else:
                    _serve_request(control, status_fds, own_fds)


def _drain(fd: int) -> None:
    # Non-blocking: BlockingIOError once it is empty.
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


def _wake_up(signum: int, frame: FrameType | None) -> None:
    # The wakeup fd does the work: it makes the server's select return, and the loop reaps.
    pass


def _selector_fds(selector: selectors.BaseSelector) -> list[int]:
    # epoll and kqueue selectors hold a descriptor of their own; select and poll do not.
    fileno = getattr(selector, "fileno", None)
    return [fileno()] if callable(fileno) else []


def _serve_request(control: socket.socket, status_fds: dict[int, int], own_fds: list[int]) -> None:
    message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST_BYTES, 3)
    if not fds:
        pid = json.loads(message).get("kill")
        # Only a child not yet reaped: after that, its pid may be another process's.
        if pid in status_fds:
            os.kill(pid, signal.SIGKILL)
        return
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        logger.error("the parser fork server received a request with %s descriptors", len(fds))
        return
    data_r, result_w, status_w = fds
    try:
        request = _ParseRequest.from_json(message)
        pid = os.fork()
    except OSError as exc:
        _write_status(status_w, -(exc.errno or errno.EAGAIN))
        for fd in fds:
            os.close(fd)
        return
    except (ValueError, TypeError, KeyError) as exc:
        # The caller sees its status pipe close, and says so.
        logger.error("the parser fork server received an unreadable request: %s", exc)
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        exitcode = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Others' status pipes above all: a child holding one would hide the end of the server from them.
            for fd in (*own_fds, *status_fds.values(), status_w):
                os.close(fd)
            with log_context(request.log_id):
                exitcode = _parse_in_child(data_r, result_w, request)
        except BaseException:
            traceback.print_exc()
        finally:
            # Never back into the server's loop, nor through its clean-up.
            os._exit(exitcode)
    os.close(data_r)
    os.close(result_w)
    _write_status(status_w, pid)
    status_fds[pid] = status_w


def _reap(status_fds: dict[int, int]) -> None:
    while status_fds:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = status_fds.pop(pid, None)
        if status_w is not None:
            _write_status(status_w, os.waitstatus_to_exitcode(wait_status))
            os.close(status_w)


def _write_status(status_w: int, word: int) -> None:
    # Eight bytes to a pipe are written whole or not at all; a caller that has gone does not need them.
    with contextlib.suppress(OSError):
        os.write(status_w, _STATUS_WORD.pack(word))


def _parse_in_child(data_r: int, result_w: int, request: _ParseRequest) -> int:
    """The child's whole life: limit itself, read the file, parse, write one message; return its exit status."""
    # The child starts as a copy of the server. If that and the file are over the limit, parsing would fail or
    # not depending on whether it happens to need a fresh page; say so every time instead.
    size = _address_space_bytes()
    if size is not None and size + request.size >= request.memory_bytes:
        return _EXIT_OVER_LIMIT_AT_START
    try:
        _apply_limits(request.memory_bytes, request.cpu_seconds)
        with open(data_r, "rb") as source:
            data = source.read(request.size)
        if len(data) != request.size:
            # Only a caller that died or gave up while sending gets here, and nobody is left to read why.
            return 1
        # Imported by the server already; the caller's process never needs the parsers.
        from ingest.parsing import parse_document

        def report_pages(done: int, total: int) -> None:
            # One short write each (under PIPE_BUF, so never interleaved); the caller reads as they come.
            os.write(result_w, _PROGRESS_TAG + f"{done} {total}\n".encode())

        try:
            document = parse_document(data, FileType(request.file_type), on_pages=report_pages)
        except DocumentParseError as exc:
            outcome: dict[str, object] = {"error": exc.message}
        else:
            outcome = {
                "text": document.text,
                "file_type": document.file_type.value,
                "title": document.title,
                "headings": [[h.start, h.level, h.title] for h in document.headings],
                "metadata": [list(pair) for pair in document.metadata],
                "ocr_pages": list(document.ocr_pages),
            }
        # ensure_ascii=False keeps Chinese text at 3 bytes a character instead of 12. Any lone surrogate that
        # slipped through becomes a \udxxx escape, which JSON reads back as the same character.
        with open(result_w, "wb") as result:
            result.write(json.dumps(outcome, ensure_ascii=False).encode("utf-8", "backslashreplace"))
    except MemoryError:
        return _EXIT_OUT_OF_MEMORY
    return 0


def _address_space_bytes() -> int | None:
    # What RLIMIT_AS is compared with. Linux only; elsewhere the limit alone has to do.
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _apply_limits(memory_bytes: int, cpu_seconds: int) -> None:
    _lower_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    # SIGXCPU at the soft limit, SIGKILL a second later if the child ignores it.
    _lower_limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)


def _lower_limit(which: int, soft: int, hard: int) -> None:
    # Raising a hard limit is not allowed; where the inherited limit is lower, it wins.
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


# One per process, like the process itself; a forked copy (a prefork pool's worker) starts its own.
_fork_server = _ForkServer()
os.register_at_fork(after_in_child=_fork_server.forget)

if __name__ == "__main__":
    _serve(int(sys.argv[1]))
