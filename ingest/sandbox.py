"""Run ``parse_document`` in a child process with memory and CPU limits.

PDF, DOCX and HTML parsers can be driven into unbounded memory use or near-endless loops by a crafted or
merely broken file. In a child process a wall-clock timeout, ``RLIMIT_AS`` and ``RLIMIT_CPU`` contain that,
and whatever happens there reaches the caller as a ``DocumentParseError`` with a message the user can act on.

The protocol is deliberately plain: the child reads one JSON header line (``{"file_type": "pdf"}``) followed
by the raw file bytes on stdin, and writes one JSON object on stdout: the parsed document, or
``{"error": message}`` for a ``DocumentParseError``. Anything else (a signal, a non-zero exit, no JSON) is the
parent's to explain.

The child holds the file at least twice (as read, and as decoded text), so ``memory_mb`` should be several
times the largest upload plus ~60 MiB for the interpreter and the parser libraries.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from app.rag.errors import DocumentParseError
from app.rag.types import FileType, Heading, ParsedDocument

if sys.platform != "win32":
    import resource

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_MODULE = "ingest.sandbox"
_MIB = 1024 * 1024
# The child exits with this when it catches MemoryError, so the parent need not guess from stderr.
_EXIT_OUT_OF_MEMORY = 3
# What an allocation failure looks like on stderr when it happens before our handler runs (start-up, imports:
# mmap of a shared library fails with "failed to map segment") or in C code that reports instead of raising.
_MEMORY_SIGNS = (
    "MemoryError",
    "Cannot allocate memory",
    "failed to map segment",
    "out of memory",
    "std::bad_alloc",
)
_STDERR_LOG_CHARS = 2000


def parse_in_subprocess(
    data: bytes, file_type: FileType, *, timeout_seconds: float, memory_mb: int
) -> ParsedDocument:
    """Parse ``data`` in a child Python process limited to ``timeout_seconds`` and ``memory_mb`` MiB.

    Raises ``DocumentParseError`` for everything the file can cause: its own parse errors, a timeout, running
    out of memory or CPU time, a crash. Failing to start a process at all (``OSError``) is the server's
    problem, not the file's, and propagates so that the caller can retry.
    """
    if timeout_seconds <= 0 or memory_mb <= 0:
        raise ValueError("timeout_seconds and memory_mb must be positive")
    header = json.dumps({"file_type": file_type.value}).encode("ascii") + b"\n"
    # CPU time is a second line of defence behind the wall-clock timeout: it also stops a child whose threads
    # burn several cores at once. Start-up and imports count too, hence the extra second.
    cpu_seconds = math.ceil(timeout_seconds) + 1
    try:
        completed = subprocess.run(
            # -P: keep the working directory off sys.path; the package comes from PYTHONPATH, nothing else.
            [sys.executable, "-P", "-m", _MODULE],
            input=header + data,
            capture_output=True,
            timeout=timeout_seconds,
            env=_child_environment(),
            preexec_fn=_resource_limits(memory_mb * _MIB, cpu_seconds),
            check=False,
        )
    except subprocess.TimeoutExpired:
        # run() has already killed and reaped the child.
        logger.warning("parsing a %s file timed out after %s s", file_type.value, timeout_seconds)
        raise DocumentParseError(
            f"parsing took longer than {timeout_seconds:g} s; the file may be damaged or too complex"
        ) from None
    return _read_result(completed, file_type, memory_mb=memory_mb, cpu_seconds=cpu_seconds)


def _child_environment() -> dict[str, str]:
    # The child must import this package from wherever the parent did, whatever its working directory is.
    paths: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if path not in paths:
            paths.append(path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _resource_limits(memory_bytes: int, cpu_seconds: int) -> Callable[[], None] | None:
    if sys.platform == "win32":
        logger.warning("no memory or CPU limits for the parser process: resource limits need POSIX")
        return None

    def apply() -> None:
        # Runs in the forked child before exec: only async-signal-safe-ish work here, no logging, no imports.
        _lower_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
        # SIGXCPU at the soft limit, SIGKILL a second later if the child ignores it.
        _lower_limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)

    return apply


def _lower_limit(which: int, soft: int, hard: int) -> None:
    # Raising a hard limit is not allowed; where the parent's own limit is lower, it wins.
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


def _read_result(
    completed: subprocess.CompletedProcess[bytes], file_type: FileType, *, memory_mb: int, cpu_seconds: int
) -> ParsedDocument:
    stderr = completed.stderr.decode("utf-8", "replace")
    code = completed.returncode
    if code == 0:
        return _document_from_json(completed.stdout, stderr)

    logger.warning("the parser process for a %s file exited with status %s", file_type.value, code)
    logger.debug("parser process stderr: %s", stderr[-_STDERR_LOG_CHARS:])
    if code == _EXIT_OUT_OF_MEMORY or any(sign in stderr for sign in _MEMORY_SIGNS):
        raise DocumentParseError(
            f"parsing needed more than {memory_mb} MiB of memory; the file may be too large or too complex"
        )
    if code == -signal.SIGXCPU:
        raise DocumentParseError(
            f"parsing used more than {cpu_seconds} s of CPU time; the file may be damaged or too complex"
        )
    if code == -signal.SIGKILL:
        raise DocumentParseError(
            "the parser was stopped for using too much memory or CPU time; "
            "the file may be damaged or too complex"
        )
    if code < 0:
        raise DocumentParseError(f"the parser crashed ({_signal_name(-code)}); the file may be damaged")
    raise DocumentParseError(f"the parser failed unexpectedly (exit status {code}); the file may be damaged")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _document_from_json(stdout: bytes, stderr: str) -> ParsedDocument:
    try:
        result = json.loads(stdout)
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
    # A child that exits 0 without a well-formed result is a bug on our side, not something the user did.
    except (ValueError, TypeError, KeyError) as exc:
        logger.error(
            "the parser process returned an unreadable result (%s): %s", exc, stderr[-_STDERR_LOG_CHARS:]
        )
        raise DocumentParseError("the parser returned an unreadable result; please report this file") from exc


def _typed(value: Any, kind: type[_T]) -> _T:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _child_main() -> int:
    result_stream = sys.stdout.buffer
    # A library that prints would corrupt the JSON result; its chatter goes to stderr with the logs instead.
    sys.stdout = sys.stderr
    try:
        # Imported here, not at the top: under the memory limit, a failed import is a MemoryError we report.
        from ingest.parsing import parse_document

        header, _, data = sys.stdin.buffer.read().partition(b"\n")
        file_type = FileType(json.loads(header)["file_type"])
        try:
            document = parse_document(data, file_type)
        except DocumentParseError as exc:
            result: dict[str, object] = {"error": exc.message}
        else:
            result = {
                "text": document.text,
                "file_type": document.file_type.value,
                "title": document.title,
                "headings": [[h.start, h.level, h.title] for h in document.headings],
            }
        # ensure_ascii=False keeps Chinese text at 3 bytes a character instead of 12. Any lone surrogate that
        # slipped through becomes a \udxxx escape, which JSON reads back as the same character.
        payload = json.dumps(result, ensure_ascii=False).encode("utf-8", "backslashreplace")
    except MemoryError:
        # Printing a traceback may itself need memory we do not have; the exit status says enough.
        os._exit(_EXIT_OUT_OF_MEMORY)
    result_stream.write(payload)
    result_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
