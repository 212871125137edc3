"""Old binary Office files: converted by LibreOffice where it is installed, refused with the reason where not."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.rag.errors import UnsupportedFileTypeError
from app.rag.filetypes import detect_file_type, libreoffice
from app.rag.types import FileType
from ingest.parse_limits import parse_in_subprocess

FIXTURES = Path(__file__).parent.parent / "fixtures" / "legacy"
needs_libreoffice = pytest.mark.skipif(libreoffice() is None, reason="LibreOffice (soffice) is not installed")


def test_without_libreoffice_an_old_word_file_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.rag.filetypes.shutil.which", lambda _name: None)
    with pytest.raises(UnsupportedFileTypeError) as caught:
        detect_file_type("minutes.doc", (FIXTURES / "minutes.doc").read_bytes())
    message = caught.value.message
    assert "converted with LibreOffice, which is not installed" in message
    assert "save the file as .docx" in message


def test_an_old_powerpoint_file_is_recognised_by_its_streams_not_its_name() -> None:
    data = (FIXTURES / "roadmap.ppt").read_bytes()
    with pytest.raises(UnsupportedFileTypeError, match="it is an old PowerPoint \\(PPT\\) file"):
        detect_file_type("roadmap.doc", data)


@needs_libreoffice
def test_an_old_word_file_is_converted_and_keeps_its_headings() -> None:
    data = (FIXTURES / "minutes.doc").read_bytes()
    assert detect_file_type("minutes.doc", data) is FileType.DOC
    document = parse_in_subprocess(data, FileType.DOC, timeout_seconds=120, memory_mb=2048)
    assert document.file_type is FileType.DOC
    assert document.title == "季度会议纪要"
    assert "第三季度的差旅预算为四万二千元" in document.text
    assert [(h.level, h.title) for h in document.headings] == [(1, "季度会议纪要"), (2, "预算"), (2, "Action items")]
    assert all(document.text[h.start :].startswith(h.title) for h in document.headings)


@needs_libreoffice
def test_an_old_powerpoint_file_is_converted_with_its_slides_and_notes() -> None:
    data = (FIXTURES / "roadmap.ppt").read_bytes()
    document = parse_in_subprocess(data, FileType.PPT, timeout_seconds=120, memory_mb=2048)
    assert document.file_type is FileType.PPT
    assert "第二阶段上线日期为十一月八日" in document.text
    assert "pilot customer in Suzhou" in document.text
    assert any("产品路线图" in h.title for h in document.headings)
