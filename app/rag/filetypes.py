"""Decide an upload's file type from its name and check that its bytes agree.

The extension says what the user meant; the content decides whether we believe it. A mismatch is reported as
``UnsupportedFileTypeError`` with a message the user can act on, before any parser sees the bytes.
"""

from __future__ import annotations

import codecs
import io
import unicodedata
import zipfile

from app.rag.errors import UnsupportedFileTypeError
from app.rag.types import FileType

_EXTENSIONS: dict[str, FileType] = {
    ".pdf": FileType.PDF,
    ".docx": FileType.DOCX,
    ".html": FileType.HTML,
    ".htm": FileType.HTML,
    ".md": FileType.MARKDOWN,
    ".markdown": FileType.MARKDOWN,
    ".rst": FileType.RESTRUCTUREDTEXT,
    ".rest": FileType.RESTRUCTUREDTEXT,
    ".txt": FileType.TEXT,
    ".text": FileType.TEXT,
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_EXTENSIONS)

# Formats people try to upload that we can name, so the error says what to do instead.
_EXTENSION_HINTS = {
    ".doc": "old Word .doc files are not supported; save the document as .docx",
    ".rtf": "save the document as .docx or .txt",
    ".odt": "save the document as .docx",
    ".pages": "export the document as .docx or PDF",
}

_LABELS = {
    FileType.PDF: "PDF",
    FileType.DOCX: "DOCX (Word)",
    FileType.HTML: "HTML",
    FileType.MARKDOWN: "Markdown",
    FileType.RESTRUCTUREDTEXT: "reStructuredText",
    FileType.TEXT: "text",
}

# Only this much of the file is inspected for text-vs-binary; it keeps detection cheap on large uploads.
SNIFF_BYTES = 8192
# PDF readers tolerate some whitespace before the header; more than this and it is not a PDF we accept.
_PDF_HEADER_SLACK = 1024
_PDF_WHITESPACE = b" \t\r\n\f\x00"

# Longest first: the UTF-32 LE BOM begins with the UTF-16 LE BOM.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# C0 controls that never appear in text files (tab, newlines, form feed, vertical tab and ESC do).
_BINARY_CONTROLS = frozenset([*range(0x01, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)])
# Random bytes are ~10% such controls; real text is ~0%. Half of that separates them with room to spare.
_MAX_CONTROL_RATIO = 0.05
# A decoding with more than this share of unassigned, private-use or control characters is not text.
_MAX_IMPLAUSIBLE_RATIO = 0.02
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def detect_file_type(filename: str, data: bytes) -> FileType:
    """Return the file's type, or raise ``UnsupportedFileTypeError`` if the extension or content is wrong.

    Never raises anything else, whatever the bytes are.
    """
    name = _display_name(filename)
    extension = _extension(name)
    file_type = _EXTENSIONS.get(extension)
    if file_type is None:
        raise UnsupportedFileTypeError(_unsupported_message(name, extension), param="file")

    problem = _content_problem(file_type, data)
    if problem is not None:
        raise UnsupportedFileTypeError(
            f"{name}: the extension says {_LABELS[file_type]} but the content is not a "
            f"{_LABELS[file_type]} file ({problem})",
            param="file",
        )
    return file_type


def sniff_unicode_encoding(sample: bytes) -> str | None:
    """Return the codec for text whose bytes reveal a Unicode encoding, else ``None``.

    That is a byte-order mark, or UTF-16 without one: NUL bytes (or many control bytes) in something that
    decodes to plausible text as UTF-16. The caller still decodes strictly; this only says what to try first.
    """
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            return codec
    if b"\x00" in sample or _control_heavy(sample):
        return _bomless_utf16(sample)
    return None


def _display_name(filename: str) -> str:
    # Browsers on Windows may send a full client path; only the last component means anything to the user.
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or "the file"


def _extension(name: str) -> str:
    _, dot, suffix = name.rpartition(".")
    if not dot:
        return ""
    return f".{suffix.lower()}"


def _unsupported_message(name: str, extension: str) -> str:
    supported = ", ".join(SUPPORTED_EXTENSIONS)
    if not extension:
        return f"{name}: the file name has no extension, so its type is unknown; supported: {supported}"
    message = f"{name}: unsupported file type '{extension}'; supported: {supported}"
    hint = _EXTENSION_HINTS.get(extension)
    return f"{message} ({hint})" if hint else message


def _content_problem(file_type: FileType, data: bytes) -> str | None:
    """Why the content does not match ``file_type``, or ``None`` when it does."""
    if file_type is FileType.PDF:
        return None if _is_pdf(data) else _describe_other(data)
    if file_type is FileType.DOCX:
        return _docx_problem(data)
    return _text_problem(data)


def _is_pdf(data: bytes) -> bool:
    head = data[: _PDF_HEADER_SLACK + 5]
    stripped = head.lstrip(_PDF_WHITESPACE)
    return stripped.startswith(b"%PDF-") and len(head) - len(stripped) <= _PDF_HEADER_SLACK


def _docx_problem(data: bytes) -> str | None:
    if not data.startswith(b"PK"):
        return _describe_other(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    # zipfile raises a zoo of types (BadZipFile, OSError, ValueError, EOFError, ...) on damaged archives, and
    # this function must answer for any bytes: every failure simply means "not a readable ZIP".
    except Exception:
        return "it is not a readable ZIP archive; the file may be damaged"
    if "word/document.xml" not in names:
        if "xl/workbook.xml" in names:
            return "it looks like an Excel workbook"
        if "ppt/presentation.xml" in names:
            return "it looks like a PowerPoint presentation"
        return "it is a ZIP archive without a Word document inside"
    return None


def _text_problem(data: bytes) -> str | None:
    sample = data[:SNIFF_BYTES]
    other = _magic_kind(sample)
    if other is not None:
        return f"it looks like {other}"
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            if codec == "utf-8-sig":
                break  # UTF-8 text can still hide binary junk after its BOM; check it like any other text
            if _decodes_plausibly(sample, codec):
                return None
            return "it starts with a Unicode byte-order mark but does not decode as Unicode text"
    if (b"\x00" in sample or _control_heavy(sample)) and _bomless_utf16(sample) is None:
        return "it contains binary data"
    return None


def _describe_other(data: bytes) -> str:
    if not data:
        return "the file is empty"
    kind = _magic_kind(data[:SNIFF_BYTES])
    if kind is not None:
        return f"it looks like {kind}"
    return "the content does not start with the expected file signature; the file may be damaged or renamed"


def _magic_kind(sample: bytes) -> str | None:
    if _is_pdf(sample):
        return "a PDF file"
    if sample.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "a ZIP archive (for example a .docx, .xlsx or .zip file)"
    if sample.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if sample.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if sample.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF image"
    if sample.startswith(b"\x7fELF"):
        return "an executable program"
    if sample.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        # Word wraps password-protected .docx files in this same OLE container.
        return "an old Office document (.doc) or a password-protected Office file"
    return None


def _control_heavy(sample: bytes) -> bool:
    if not sample:
        return False
    controls = sum(1 for byte in sample if byte in _BINARY_CONTROLS)
    return controls / len(sample) > _MAX_CONTROL_RATIO


def _bomless_utf16(sample: bytes) -> str | None:
    """Pick the UTF-16 byte order that decodes ``sample`` to plausible text, if either does."""
    best: tuple[int, str] | None = None
    for codec in ("utf-16-le", "utf-16-be"):
        text = _decode_prefix(sample, codec)
        if text is None or not _plausible_text(text):
            continue
        # Read in the wrong byte order, ASCII turns into U+xx00 ideographs, so the right order is the one with
        # more ASCII; little-endian wins ties because that is what Windows writes.
        ascii_count = sum(1 for char in text if char < "\x80")
        if best is None or ascii_count > best[0]:
            best = (ascii_count, codec)
    return None if best is None else best[1]


def _decodes_plausibly(sample: bytes, codec: str) -> bool:
    text = _decode_prefix(sample, codec)
    return text is not None and _plausible_text(text)


def _decode_prefix(sample: bytes, codec: str) -> str | None:
    # The sample may end inside a character; an incremental decoder without ``final`` tolerates that.
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    try:
        return decoder.decode(sample, final=False)
    except UnicodeDecodeError:
        return None


def _plausible_text(text: str) -> bool:
    if not text:
        return False
    implausible = sum(
        1
        for char in text
        if char not in _TEXT_CONTROLS and unicodedata.category(char) in ("Cc", "Cn", "Co", "Cs")
    )
    return implausible / len(text) <= _MAX_IMPLAUSIBLE_RATIO
