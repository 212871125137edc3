from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest import sandbox
from ingest.parsing import parse_document
from ingest.sandbox import parse_in_subprocess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="resource limits need POSIX")

MARKDOWN = "# 标题\n\n正文：这是一个用于检测编码的句子。\n\n## 第二节\n\nMore text.\n"


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


def test_timeout_is_a_parse_error() -> None:
    with pytest.raises(DocumentParseError, match=r"took longer than 0\.001 s; the file may be damaged"):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=0.001, memory_mb=1024)


def test_memory_limit_during_start_up_is_a_parse_error() -> None:
    # Too little address space for the interpreter to import the parsers: the import fails in the child.
    with pytest.raises(DocumentParseError, match="parsing needed more than 16 MiB of memory"):
        parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=16)


def test_memory_limit_while_parsing_is_a_parse_error() -> None:
    # The child holds the input at least twice (read, then split from its header): 2 x 64 MiB > 100 MiB.
    data = b"a" * (64 * 1024 * 1024)
    with pytest.raises(DocumentParseError, match="parsing needed more than 100 MiB of memory"):
        parse_in_subprocess(data, FileType.TEXT, timeout_seconds=30, memory_mb=100)


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        parse_in_subprocess(b"x", FileType.TEXT, timeout_seconds=0, memory_mb=100)


def _finished(
    returncode: int, *, stdout: bytes = b"", stderr: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess(args=[], returncode=returncode, stdout=stdout, stderr=stderr)


@pytest.mark.parametrize(
    ("completed", "message"),
    [
        (_finished(-signal.SIGSEGV), r"the parser crashed \(SIGSEGV\); the file may be damaged"),
        (_finished(-signal.SIGXCPU), r"parsing used more than 3 s of CPU time"),
        (_finished(-signal.SIGKILL), r"stopped for using too much memory or CPU time"),
        (_finished(1, stderr=b"Traceback...\nMemoryError\n"), r"needed more than 512 MiB of memory"),
        (_finished(3), r"needed more than 512 MiB of memory"),
        (_finished(2, stderr=b"Traceback...\nKeyError"), r"the parser failed unexpectedly \(exit status 2\)"),
        (_finished(0, stdout=b"not json"), r"the parser returned an unreadable result"),
        (_finished(0, stdout=b'{"text": 1}'), r"the parser returned an unreadable result"),
        (_finished(0, stdout=b'{"error": "the PDF file is encrypted"}'), r"^the PDF file is encrypted$"),
    ],
)
def test_child_outcomes_are_explained(completed: subprocess.CompletedProcess[bytes], message: str) -> None:
    with pytest.raises(DocumentParseError, match=message):
        sandbox._read_result(completed, FileType.PDF, memory_mb=512, cpu_seconds=3)
