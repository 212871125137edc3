from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest import parse_limits
from ingest.parse_limits import parse_in_subprocess
from ingest.parsing import parse_document

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")

MARKDOWN = "# 标题\n\n正文：这是一个用于检测编码的句子。\n\n## 第二节\n\nMore text.\n"
# bs4 needs ~10 s for this (~5 MiB); the tests below stop it long before.
SLOW_HTML = b"<html><body>" + b"<p>word <b>bold</b> text</p>" * 200_000 + b"</body></html>"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def parser_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pid of every parser process started during the test, in order, so that a test can signal them."""
    pids: list[int] = []
    start_parse = parse_limits._ForkServer.start_parse

    def recording_start_parse(
        server: parse_limits._ForkServer, request: parse_limits._ParseRequest
    ) -> parse_limits._ParseChild:
        child = start_parse(server, request)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(parse_limits._ForkServer, "start_parse", recording_start_parse)
    return pids


@pytest.fixture
def own_fork_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[parse_limits._ForkServer]:
    """A fork server of the test's own, so that the test can break it without breaking the others'."""
    server = parse_limits._ForkServer()
    monkeypatch.setattr(parse_limits, "_fork_server", server)
    yield server
    server.stop()


def test_child_result_equals_in_process_parse() -> None:
    data = MARKDOWN.encode("gb18030")
    result = parse_in_subprocess(data, FileType.MARKDOWN, timeout_seconds=30, memory_mb=1024)
    assert result == parse_document(data, FileType.MARKDOWN)
    assert [h.title for h in result.headings] == ["标题", "第二节"]


def test_works_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = parse_in_subprocess(b"<p>hello</p>", FileType.HTML, timeout_seconds=30, memory_mb=1024)
    assert result.text == "hello"


@pytest.mark.usefixtures("own_fork_server")
def test_a_module_in_the_working_directory_cannot_stand_in_for_a_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bs4.py").write_text("raise SystemExit('the working directory was on the path')\n")
    monkeypatch.chdir(tmp_path)
    result = parse_in_subprocess(b"<p>hello</p>", FileType.HTML, timeout_seconds=30, memory_mb=1024)
    assert result.text == "hello"


def test_parse_errors_come_back_with_their_message() -> None:
    with pytest.raises(DocumentParseError, match=r"^the text file contains no text$"):
        parse_in_subprocess(b"  \n ", FileType.TEXT, timeout_seconds=30, memory_mb=1024)


def test_timeout_is_a_parse_error_and_stops_the_parser(parser_pids: list[int]) -> None:
    began = time.monotonic()
    with pytest.raises(
        DocumentParseError, match=r"^parsing took longer than 0\.5 s; the file may be damaged"
    ):
        parse_in_subprocess(SLOW_HTML, FileType.HTML, timeout_seconds=0.5, memory_mb=1024)
    assert time.monotonic() - began < 5
    assert len(parser_pids) == 1
    assert not _running(parser_pids)


def test_memory_limit_below_the_starting_size_is_a_parse_error(caplog: pytest.LogCaptureFixture) -> None:
    # A child starts as a copy of the fork server, ~60 MiB with the parser libraries, far above 16 MiB. Parsing
    # "hello" needs no fresh memory and would succeed anyway; the child refuses to start instead.
    with (
        caplog.at_level(logging.WARNING, logger="ingest.parse_limits"),
        pytest.raises(DocumentParseError, match="parsing needed more than 16 MiB of memory"),
    ):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=16)
    assert "was over memory_mb=16 before parsing" in caplog.text


def test_memory_limit_while_parsing_is_a_parse_error(caplog: pytest.LogCaptureFixture) -> None:
    # Measured: the child holds ~60 MiB + the 96 MiB file = ~160 MiB before parsing, under the limit; decoding
    # adds the text (another 96 MiB, ~250 MiB in all) and the JSON result twice more, so the parse hits 200 MiB.
    data = b"a" * (96 * 1024 * 1024)
    with (
        caplog.at_level(logging.WARNING, logger="ingest.parse_limits"),
        pytest.raises(DocumentParseError, match="parsing needed more than 200 MiB of memory"),
    ):
        parse_in_subprocess(data, FileType.TEXT, timeout_seconds=30, memory_mb=200)
    assert f"exited with status {parse_limits._EXIT_OUT_OF_MEMORY}" in caplog.text


def test_accepts_a_timeout_longer_than_one_poll_can_wait() -> None:
    # poll() takes at most 2**31 - 1 ms, about 24.8 days; the setting has no upper bound.
    result = parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=1e8, memory_mb=1024)
    assert result.text == "hello"


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        parse_in_subprocess(b"x", FileType.TEXT, timeout_seconds=0, memory_mb=100)
    with pytest.raises(ValueError):
        parse_in_subprocess(b"x", FileType.TEXT, timeout_seconds=10, memory_mb=-1)


@pytest.mark.usefixtures("own_fork_server")
def test_failing_to_start_the_fork_server_is_the_servers_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An OSError, not a DocumentParseError: the job is retried instead of blaming the file.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    with pytest.raises(FileNotFoundError):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)


@pytest.mark.usefixtures("own_fork_server")
def test_a_fork_server_that_exits_at_once_is_the_servers_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # As when the server cannot import the parsers: its traceback is on stderr, the caller gets an OSError.
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(OSError, match=r"^\[Errno \d+\] the parser fork server exited with status 1"):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)


def test_a_fork_server_that_died_is_started_again(own_fork_server: parse_limits._ForkServer) -> None:
    assert parse_in_subprocess(b"one", FileType.TEXT, timeout_seconds=30, memory_mb=1024).text == "one"
    first = own_fork_server._process
    assert first is not None
    first.kill()
    first.wait(10)
    assert parse_in_subprocess(b"two", FileType.TEXT, timeout_seconds=30, memory_mb=1024).text == "two"
    assert own_fork_server._process is not None
    assert own_fork_server._process.pid != first.pid


def test_a_fork_server_that_dies_during_a_parse_is_the_servers_problem(
    own_fork_server: parse_limits._ForkServer, parser_pids: list[int]
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = pool.submit(
            parse_in_subprocess, SLOW_HTML, FileType.HTML, timeout_seconds=30, memory_mb=1024
        )
        child = _wait_for_pid(parser_pids)
        assert own_fork_server._process is not None
        own_fork_server._process.kill()
        with pytest.raises(OSError, match="the parser fork server stopped while a file was being parsed"):
            parsing.result(timeout=30)
    # Orphaned, it would run on until its CPU limit; the test does not wait for that.
    os.kill(child, signal.SIGKILL)


def test_one_fork_server_serves_every_parse_of_a_process(own_fork_server: parse_limits._ForkServer) -> None:
    servers = set()
    for text in ("one", "two", "three"):
        parse_in_subprocess(text.encode(), FileType.TEXT, timeout_seconds=30, memory_mb=1024)
        assert own_fork_server._process is not None
        servers.add(own_fork_server._process.pid)
    assert len(servers) == 1


def test_parses_from_many_threads_at_once(parser_pids: list[int]) -> None:
    documents = [f"# 文档 {n}\n\n第 {n} 个文档的正文。\n\n## 小节\n\nText {n}.\n".encode() for n in range(24)]

    def parse(data: bytes) -> bool:
        result = parse_in_subprocess(data, FileType.MARKDOWN, timeout_seconds=30, memory_mb=1024)
        return result == parse_document(data, FileType.MARKDOWN)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(parse, documents))
    assert len(parser_pids) == 24
    assert not _running(parser_pids)


def test_failures_from_many_threads_keep_their_own_explanation() -> None:
    # Half the children exit with the over-the-limit code while the others succeed. Each parse has its own
    # status pipe, written once by the one process that reaps children; multiprocessing, whose exit codes
    # were read by whichever thread polled first, gave 1 to 4 in 200 of these "exit status 255".
    def parse(n: int) -> str:
        try:
            parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=16 if n % 2 else 1024)
        except DocumentParseError as exc:
            return exc.message
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(parse, range(200)))
    for n, outcome in enumerate(outcomes):
        assert outcome.startswith("parsing needed more than 16 MiB") if n % 2 else outcome == "ok"


@pytest.mark.parametrize(
    ("signal_number", "message"),
    [
        (signal.SIGSEGV, r"^the parser crashed \(SIGSEGV\); the file may be damaged$"),
        (signal.SIGKILL, r"^the parser was stopped for using too much memory or CPU time"),
        (signal.SIGXCPU, r"^parsing used more than 61 s of CPU time"),
    ],
)
def test_a_child_killed_by_a_signal_is_a_parse_error(
    signal_number: int, message: str, parser_pids: list[int]
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = pool.submit(
            parse_in_subprocess, SLOW_HTML, FileType.HTML, timeout_seconds=30, memory_mb=1024
        )
        os.kill(_wait_for_pid(parser_pids), signal_number)
        with pytest.raises(DocumentParseError, match=message):
            parsing.result(timeout=30)


def test_children_do_not_rerun_the_callers_main_script(tmp_path: Path) -> None:
    # multiprocessing and billiard re-execute the parent's __main__ in every child by default. The `wenda`
    # script would then import app.cli again for every parse, and a script with side effects would repeat them.
    marker = tmp_path / "runs"
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            with open({str(marker)!r}, "a") as runs:
                runs.write("ran\\n")

            if __name__ == "__main__":
                from app.rag.types import FileType
                from ingest.parse_limits import parse_in_subprocess

                for _ in range(3):
                    result = parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)
                print(result.text)
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "hello\n"
    assert marker.read_text() == "ran\n"


def test_the_fork_server_ends_with_its_caller(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from app.rag.types import FileType
        from ingest import parse_limits

        parse_limits.parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)
        print(parse_limits._fork_server._process.pid)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    server = int(completed.stdout)
    deadline = time.monotonic() + 10
    while _running([server]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running([server])


@pytest.mark.parametrize(
    ("exitcode", "message"),
    [
        (-signal.SIGSEGV, r"^the parser crashed \(SIGSEGV\); the file may be damaged$"),
        (-signal.SIGXCPU, r"^parsing used more than 3 s of CPU time; the file may be damaged"),
        (-signal.SIGKILL, r"^the parser was stopped for using too much memory or CPU time"),
        (-99, r"^the parser crashed \(signal 99\)"),
        (parse_limits._EXIT_OUT_OF_MEMORY, r"^parsing needed more than 512 MiB of memory"),
        (parse_limits._EXIT_OVER_LIMIT_AT_START, r"^parsing needed more than 512 MiB of memory"),
        (1, r"^the parser failed unexpectedly \(exit status 1\); the file may be damaged$"),
        (255, r"^the parser failed unexpectedly \(exit status 255\)"),
        (None, r"^the parser failed unexpectedly \(exit status unknown\)"),
        (0, r"^the parser returned an unreadable result; please report this file$"),
    ],
)
def test_exit_codes_are_explained(exitcode: int | None, message: str) -> None:
    assert re.search(message, parse_limits._exit_message(exitcode, memory_mb=512, cpu_seconds=3))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", r"^the parser returned an unreadable result"),
        (b"[]", r"^the parser returned an unreadable result"),
        (b'{"text": 1}', r"^the parser returned an unreadable result"),
        (
            b'{"text": "x", "file_type": "pdf", "title": "t", "headings": [[0, 1]]}',
            r"^the parser returned an unreadable result",
        ),
        (b'{"error": "the PDF file is encrypted"}', r"^the PDF file is encrypted$"),
        (b'{"error": 3}', r"^the file could not be parsed$"),
    ],
)
def test_unusable_results_are_parse_errors(payload: bytes, message: str) -> None:
    with pytest.raises(DocumentParseError, match=message):
        parse_limits._document_from_json(payload)


def test_result_protocol_round_trips_headings_surrogates_metadata_and_ocr_pages() -> None:
    document = parse_limits._document_from_json(
        '{"text": "a\\ud800b", "file_type": "markdown", "title": "标题", "headings": [[0, 1, "标题"]], '
        '"metadata": [["subject", "周报"]], "ocr_pages": [2, 5]}'.encode()
    )
    assert document.text == "a\ud800b"
    assert [(h.start, h.level, h.title) for h in document.headings] == [(0, 1, "标题")]
    assert document.metadata == (("subject", "周报"),)
    assert document.ocr_pages == (2, 5)


def test_progress_records_are_passed_on_even_when_split_across_reads() -> None:
    heard: list[tuple[int, int]] = []
    stream = b"\x001 3\n\x002 3\n\x003 3\n{\"text\": 1}"
    pending = b""
    rest = b""
    for cut in range(0, len(stream), 4):
        pending = parse_limits._take_progress(pending + stream[cut : cut + 4], lambda d, t: heard.append((d, t)))
        if pending and not pending.startswith(b"\x00"):
            rest, pending = pending, b""
            rest += stream[cut + 4 :]
            break
    assert heard == [(1, 3), (2, 3), (3, 3)]
    assert rest == b'{"text": 1}'


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parse_children_start_from_a_single_threaded_server(
    own_fork_server: parse_limits._ForkServer,
) -> None:
    # fork() copies only the calling thread; from a multi-threaded process a child can inherit a lock that
    # no thread will ever release. The caller (here, pytest with a thread started below) forks nothing.
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)
        assert own_fork_server._process is not None
        with open(f"/proc/{own_fork_server._process.pid}/status") as status:
            assert "Threads:\t1\n" in status.read()
    finally:
        stop.set()
        busy.join()


def _running(pids: list[int]) -> list[int]:
    # Neither running nor a zombie: the server writes an exit status only after it has reaped the child.
    running = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        running.append(pid)
    return running


def _wait_for_pid(pids: list[int]) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pids:
            return pids[0]
        time.sleep(0.01)
    raise AssertionError("no parser process appeared")
