from __future__ import annotations

import codecs
import contextlib
import io
import random
import zipfile

import docx
import pytest

from app.rag.errors import UnsupportedFileTypeError
from app.rag.filetypes import detect_file_type, sniff_unicode_encoding
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


def test_unknown_extension_names_the_file_and_lists_supported_types() -> None:
    with pytest.raises(UnsupportedFileTypeError) as caught:
        detect_file_type("photo.png", PNG)
    assert caught.value.message.startswith(
        "photo.png: unsupported file type '.png'; supported: .pdf, .docx, .html, .htm, .md, .markdown, .rst, .rest, "
        ".txt"
    )
    assert caught.value.code == "unsupported_file_type"


def test_missing_extension_is_unsupported() -> None:
    with pytest.raises(UnsupportedFileTypeError, match="Makefile: the file name has no extension"):
        detect_file_type("Makefile", b"all:\n\techo hi\n")


def test_old_word_format_gets_a_hint() -> None:
    with pytest.raises(UnsupportedFileTypeError, match=r"save the document as \.docx"):
        detect_file_type("minutes.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        (
            "report.pdf",
            PNG,
            "report.pdf: the extension says PDF but the content is not a PDF file "
            "(it looks like a PNG image)",
        ),
        ("report.pdf", b"", "the extension says PDF but the content is not a PDF file (the file is empty)"),
        ("report.pdf", b" " * 2000 + MINIMAL_PDF, "the content is not a PDF file"),
        ("report.pdf", b"just some text", "does not start with the expected file signature"),
        ("letter.docx", b"plain text", "says DOCX (Word) but the content is not a DOCX (Word) file"),
        ("letter.docx", _zip_bytes(["readme.txt"]), "a ZIP archive without a Word document inside"),
        ("letter.docx", _zip_bytes(["xl/workbook.xml"]), "it looks like an Excel workbook"),
        ("letter.docx", b"PK\x03\x04" + bytes(40), "not a readable ZIP archive"),
        ("letter.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "password-protected"),
        ("notes.txt", bytes(range(256)) * 32, "notes.txt: the extension says text but the content is not"),
        ("notes.txt", bytes(range(256)) * 32, "it contains binary data"),
        ("notes.txt", MINIMAL_PDF, "it looks like a PDF file"),
        ("notes.md", _docx_bytes(), "it looks like a ZIP archive"),
        ("page.html", PNG, "it looks like a PNG image"),
        ("page.html", b"\xff\xd8\xff\xe0" + bytes(50), "it looks like a JPEG image"),
        ("page.html", b"GIF89a" + bytes(50), "it looks like a GIF image"),
        ("run.txt", b"\x7fELF\x02\x01\x01" + bytes(50), "it looks like an executable program"),
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
