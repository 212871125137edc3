from __future__ import annotations

import codecs
import contextlib
import io
import random
import zipfile
from pathlib import Path

import docx
import pytest

from app.rag.errors import UnsupportedFileTypeError
from app.rag.filetypes import FORMATS, content_mime, detect_file_type, formats_table, sniff_unicode_encoding
from app.rag.types import FileType

MINIMAL_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def _docx_bytes() -> bytes:
    document = docx.Document()
    document.add_paragraph("hello")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _zip_bytes(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<xml/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("report.pdf", MINIMAL_PDF, FileType.PDF),
        ("REPORT.PDF", MINIMAL_PDF, FileType.PDF),
        ("padded.pdf", b" \r\n\t" * 100 + MINIMAL_PDF, FileType.PDF),
        ("letter.docx", _docx_bytes(), FileType.DOCX),
        ("page.html", b"<html><body><p>hi</p></body></html>", FileType.HTML),
        ("page.htm", b"<p>hi</p>", FileType.HTML),
        ("README.md", b"# Title\n\ntext", FileType.MARKDOWN),
        ("notes.markdown", b"# Title", FileType.MARKDOWN),
        ("notes.txt", "plain text, café".encode(), FileType.TEXT),
        ("notes.text", b"plain", FileType.TEXT),
        ("gbk.txt", "中文测试：这是一个用于检测编码的句子。".encode("gbk"), FileType.TEXT),
        ("big5.txt", "繁體中文測試".encode("big5"), FileType.TEXT),
        ("bom16.txt", "中文 text".encode("utf-16"), FileType.TEXT),
        ("bom32.txt", "中文 text".encode("utf-32"), FileType.TEXT),
        ("le16.txt", "plain ASCII saved as UTF-16 without a BOM\n".encode("utf-16-le"), FileType.TEXT),
        ("be16.md", "# Heading\n\nBOM-less big-endian\n".encode("utf-16-be"), FileType.MARKDOWN),
        ("empty.txt", b"", FileType.TEXT),
        ("index.rst", b"Title\n=====\n\nText.\n", FileType.RESTRUCTUREDTEXT),
        ("NOTES.REST", "标题\n====\n".encode(), FileType.RESTRUCTUREDTEXT),
        (r"C:\Users\me\Documents\report.pdf", MINIMAL_PDF, FileType.PDF),
    ],
)
def test_detects_matching_extension_and_content(filename: str, data: bytes, expected: FileType) -> None:
    assert detect_file_type(filename, data) is expected


def test_unknown_extension_names_the_file_what_it_is_and_the_supported_types() -> None:
    with pytest.raises(UnsupportedFileTypeError) as caught:
        detect_file_type("setup.exe", b"MZ" + bytes(300))
    message = caught.value.message
    assert message.startswith("setup.exe: unsupported file type '.exe' (the content is a Windows program); supported: .pdf")
    assert ".xlsx" in message and ".eml" in message and message.endswith("and any text file")
    assert caught.value.code == "unsupported_file_type"


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("Makefile", b"all:\n\techo hi\n", FileType.CODE),
        ("main.py", b"import os\n\nprint(os.getcwd())\n", FileType.CODE),
        ("server.conf", "端口 = 8080\n".encode("gbk"), FileType.CODE),
        ("scan", PNG, FileType.IMAGE),
        ("report.bin", MINIMAL_PDF, FileType.PDF),
        ("letter", _docx_bytes(), FileType.DOCX),
    ],
)
def test_a_file_without_a_known_extension_is_taken_by_its_content(
    filename: str, data: bytes, expected: FileType
) -> None:
    assert detect_file_type(filename, data) is expected


def test_a_binary_file_without_an_extension_is_refused_with_what_it_is() -> None:
    with pytest.raises(UnsupportedFileTypeError, match="no extension and its content is a gzip archive"):
        detect_file_type("backup", b"\x1f\x8b\x08" + bytes(100))


def test_a_zip_archive_is_refused_with_a_hint() -> None:
    with pytest.raises(UnsupportedFileTypeError, match="upload the documents inside the archive one by one"):
        detect_file_type("docs.zip", _zip_bytes(["a.txt"]))


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        (
            "report.pdf",
            PNG,
            "report.pdf: the extension says PDF but the content is not a PDF file (it is an image file)",
        ),
        ("report.pdf", b"", "the extension says PDF but the content is not a PDF file (it is an empty file)"),
        ("report.pdf", b" " * 2000 + MINIMAL_PDF, "the content is not a PDF file"),
        ("report.pdf", b"just some text", "(it is text)"),
        ("letter.docx", b"plain text", "says Word (DOCX) but the content is not a Word (DOCX) file"),
        ("letter.docx", _zip_bytes(["readme.txt"]), "(it is zip archive data)"),
        ("letter.docx", _zip_bytes(["xl/workbook.xml"]), "it is an Excel (XLSX) file"),
        ("sheet.xlsx", _zip_bytes(["ppt/presentation.xml"]), "it is a PowerPoint (PPTX) file"),
        ("letter.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "password-protected"),
        ("notes.txt", bytes(range(256)) * 32, "notes.txt: the extension says text but the content is not"),
        ("notes.txt", bytes(range(256)) * 32, "it contains binary data"),
        ("notes.txt", MINIMAL_PDF, "it is a PDF file"),
        ("notes.md", _docx_bytes(), "it is a Word (DOCX) file"),
        ("data.csv", _zip_bytes(["xl/workbook.xml"]), "it is an Excel (XLSX) file"),
        ("page.html", PNG, "it is an image file"),
        ("page.html", b"\xff\xd8\xff\xe0" + bytes(50), "the content is not an HTML file (it is an image file)"),
        ("page.html", b"GIF89a" + bytes(50), "it contains binary data: a GIF image"),
        ("run.txt", b"\x7fELF\x02\x01\x01" + bytes(50), "it contains binary data: an executable program"),
        ("junk.txt", b"\xff\xfe\x00\xd8\x00\xd8", "does not decode as Unicode text"),
    ],
)
def test_rejects_content_that_contradicts_the_extension(filename: str, data: bytes, message: str) -> None:
    with pytest.raises(UnsupportedFileTypeError) as caught:
        detect_file_type(filename, data)
    assert message in caught.value.message
    assert caught.value.param == "file"


def test_binary_without_nul_bytes_is_still_rejected() -> None:
    junk = bytes(range(1, 32)) * 100
    with pytest.raises(UnsupportedFileTypeError, match="binary data"):
        detect_file_type("junk.txt", junk)


def test_never_raises_anything_but_unsupported_file_type() -> None:
    rng = random.Random(20240601)
    seeds = [MINIMAL_PDF, _docx_bytes(), PNG, "中文".encode("utf-16"), b"PK\x03\x04", b"%PDF-"]
    for _ in range(300):
        size = rng.choice([0, 1, 2, 3, 7, 64, 1000, 9000])
        data = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.5:
            seed = rng.choice(seeds)
            data = seed[: rng.randrange(len(seed) + 1)] + data
        for name in ("a.pdf", "a.docx", "a.html", "a.md", "a.txt", "a.exe", "noext", "", "."):
            with contextlib.suppress(UnsupportedFileTypeError):
                detect_file_type(name, data)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (codecs.BOM_UTF8 + b"hi", "utf-8-sig"),
        ("hi".encode("utf-16"), "utf-16"),
        ("hi".encode("utf-32"), "utf-32"),
        ("plain English text\n".encode("utf-16-le"), "utf-16-le"),
        ("plain English text\n".encode("utf-16-be"), "utf-16-be"),
        ("中文段落，带一些 ASCII text.\n".encode("utf-16-le"), "utf-16-le"),
        (b"plain ascii", None),
        ("中文".encode("gbk"), None),
        (bytes(range(256)) * 8, None),
    ],
)
def test_sniff_unicode_encoding(sample: bytes, expected: str | None) -> None:
    assert sniff_unicode_encoding(sample) == expected


def test_the_readme_prints_the_formats_table_as_the_code_has_it() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- formats:start")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- formats:end -->")].strip()
    assert table == formats_table()


def test_every_format_in_the_table_has_a_parser_and_every_file_type_a_row() -> None:
    from ingest.parsing import parser_for

    assert {row.file_type for row in FORMATS} == set(FileType)
    assert all(callable(parser_for(file_type)) for file_type in FileType)


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        ("scan.png", PNG, "image/png"),
        ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(50), "image/jpeg"),
        ("page.tiff", b"II*\x00" + bytes(50), "image/tiff"),
        ("page.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(50), "image/webp"),
    ],
)
def test_an_image_is_stored_with_its_own_media_type(name: str, data: bytes, mime: str) -> None:
    file_type = detect_file_type(name, data)
    assert file_type is FileType.IMAGE
    assert content_mime(file_type, data) == mime
