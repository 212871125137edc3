from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest import sandbox
from ingest.parsing import parse_document
from ingest.sandbox import parse_in_subprocess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")

MARKDOWN = "# 标题\n\n正文：这是一个用于检测编码的句子。\n\n## 第二节\n\nMore text.\n"
# bs4 needs ~10 s for this (~5 MiB); the tests below stop it long before.
SLOW_HTML = b"<html><body>" + b"<p>word <b>bold</b> text</p>" * 200_000 + b"</body></html>"
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_child_result_equals_in_process_parse() -> None:
    data = MARKDOWN.encode("gb18030")
    result = parse_in_subprocess(data, FileType.MARKDOWN, timeout_seconds=30, memory_mb=1024)
    assert result == parse_document(data, FileType.MARKDOWN)
    assert [h.title for h in result.headings] == ["标题", "第二节"]


def test_works_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = parse_in_subprocess(b"<p>hello</p>", FileType.HTML, timeout_seconds=30, memory_mb=1024)
    assert result.text == "hello"


def test_parse_errors_come_back_with_their_message() -> None:
    with pytest.raises(DocumentParseError, match=r"^the text file contains no text$"):
        parse_in_subprocess(b"  \n ", FileType.TEXT, timeout_seconds=30, memory_mb=1024)


def test_timeout_is_a_parse_error_and_stops_the_parser() -> None:
    began = time.monotonic()
    with pytest.raises(
        DocumentParseError, match=r"^parsing took longer than 0\.5 s; the file may be damaged"
    ):
        parse_in_subprocess(SLOW_HTML, FileType.HTML, timeout_seconds=0.5, memory_mb=1024)
    assert time.monotonic() - began < 5
    assert not _parser_children()


def test_memory_limit_below_the_starting_size_is_a_parse_error(caplog: pytest.LogCaptureFixture) -> None:
    # A child starts as a copy of the fork server, ~60 MiB with the parser libraries, far above 16 MiB. Parsing
    # "hello" needs no fresh memory and would succeed anyway; the child refuses to start instead.
    with (
        caplog.at_level(logging.WARNING, logger="ingest.sandbox"),
        pytest.raises(DocumentParseError, match="parsing needed more than 16 MiB of memory"),
    ):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=16)
    assert "was over memory_mb=16 before parsing" in caplog.text


def test_memory_limit_while_parsing_is_a_parse_error(caplog: pytest.LogCaptureFixture) -> None:
    # Measured: the child starts at ~60 MiB + the 96 MiB file = ~160 MiB, under the limit; decoding adds the
    # text (another 96 MiB, ~250 MiB in all) and the JSON result twice more, so the parse itself hits 200 MiB.
    data = b"a" * (96 * 1024 * 1024)
    with (
        caplog.at_level(logging.WARNING, logger="ingest.sandbox"),
        pytest.raises(DocumentParseError, match="parsing needed more than 200 MiB of memory"),
    ):
        parse_in_subprocess(data, FileType.TEXT, timeout_seconds=30, memory_mb=200)
    assert f"exited with status {sandbox._EXIT_OUT_OF_MEMORY}" in caplog.text


def test_accepts_a_timeout_longer_than_one_poll_can_wait() -> None:
    # select's poll() takes at most 2**31 - 1 ms, about 24.8 days; the setting has no upper bound.
    result = parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=1e8, memory_mb=1024)
    assert result.text == "hello"


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        parse_in_subprocess(b"x", FileType.TEXT, timeout_seconds=0, memory_mb=100)
    with pytest.raises(ValueError):
        parse_in_subprocess(b"x", FileType.TEXT, timeout_seconds=10, memory_mb=-1)


def test_parses_from_many_threads_at_once() -> None:
    documents = [f"# 文档 {n}\n\n第 {n} 个文档的正文。\n\n## 小节\n\nText {n}.\n".encode() for n in range(24)]

    def parse(data: bytes) -> bool:
        result = parse_in_subprocess(data, FileType.MARKDOWN, timeout_seconds=30, memory_mb=1024)
        return result == parse_document(data, FileType.MARKDOWN)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(parse, documents))
    assert not _parser_children()


def test_failures_from_many_threads_keep_their_own_explanation() -> None:
    # Half the children exit with the out-of-memory code while the others succeed. Without the sandbox's lock
    # around starting children and reading exit codes, 1 to 4 in 200 came back as "exit status 255" (or the
    # parent crashed closing a child it thought still running), because multiprocessing read the code twice.
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
        (signal.SIGXCPU, r"^parsing used more than 31 s of CPU time"),
    ],
)
def test_a_child_killed_by_a_signal_is_a_parse_error(signal_number: int, message: str) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = pool.submit(
            parse_in_subprocess, SLOW_HTML, FileType.HTML, timeout_seconds=30, memory_mb=1024
        )
        os.kill(_wait_for_parser_child(), signal_number)
        with pytest.raises(DocumentParseError, match=message):
            parsing.result(timeout=30)


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the main-script shortcut is for CPython 3.11 only"
)
def test_children_do_not_rerun_the_callers_main_script(tmp_path: Path) -> None:
    # multiprocessing re-executes the parent's __main__ in every child by default. The `wenda` script would
    # then import app.cli again for every parse, and a script with side effects would repeat them.
    marker = tmp_path / "runs"
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            with open({str(marker)!r}, "a") as runs:
                runs.write("ran\\n")

            if __name__ == "__main__":
                from app.rag.types import FileType
                from ingest.sandbox import parse_in_subprocess

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
    assert "could not import ingest.parsing" not in completed.stderr


def test_falls_back_to_spawn_without_a_fork_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    sandbox._parser_context.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.sandbox"):
            result = parse_in_subprocess(b"<p>hello</p>", FileType.HTML, timeout_seconds=30, memory_mb=1024)
        assert sandbox._parser_context().get_start_method() == "spawn"
    finally:
        sandbox._parser_context.cache_clear()
    assert result.text == "hello"
    assert "no fork server on this platform" in caplog.text


@pytest.mark.parametrize(
    ("exitcode", "message"),
    [
        (-signal.SIGSEGV, r"^the parser crashed \(SIGSEGV\); the file may be damaged$"),
        (-signal.SIGXCPU, r"^parsing used more than 3 s of CPU time; the file may be damaged"),
        (-signal.SIGKILL, r"^the parser was stopped for using too much memory or CPU time"),
        (-99, r"^the parser crashed \(signal 99\)"),
        (sandbox._EXIT_OUT_OF_MEMORY, r"^parsing needed more than 512 MiB of memory"),
        (sandbox._EXIT_OVER_LIMIT_AT_START, r"^parsing needed more than 512 MiB of memory"),
        (1, r"^the parser failed unexpectedly \(exit status 1\); the file may be damaged$"),
        (255, r"^the parser failed unexpectedly \(exit status 255\)"),
        (None, r"^the parser failed unexpectedly \(exit status unknown\)"),
        (0, r"^the parser returned an unreadable result; please report this file$"),
    ],
)
def test_exit_codes_are_explained(exitcode: int | None, message: str) -> None:
    assert re.search(message, sandbox._exit_message(exitcode, memory_mb=512, cpu_seconds=3))


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
        sandbox._document_from_json(payload)


def test_result_protocol_round_trips_headings_and_surrogates() -> None:
    document = sandbox._document_from_json(
        '{"text": "a\\ud800b", "file_type": "markdown", "title": "标题", "headings": [[0, 1, "标题"]]}'.encode()
    )
    assert document.text == "a\ud800b"
    assert [(h.start, h.level, h.title) for h in document.headings] == [(0, 1, "标题")]


def _parser_children() -> list[multiprocessing.process.BaseProcess]:
    # Under the sandbox's lock: listing children reads the exit codes of those that have ended.
    with sandbox._children_lock:
        return [p for p in multiprocessing.active_children() if p.name.startswith("parse-")]


def _wait_for_parser_child() -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = _parser_children()
        if children and children[0].pid is not None:
            return children[0].pid
        time.sleep(0.01)
    raise AssertionError("no parser process appeared")
