"""What an upload is: one table of the formats we read, and detection by content, not by name alone.

The extension says what the user meant; the content decides whether we believe it. Containers are told apart
by what is inside them (the members of a ZIP, the streams of an OLE file, a signature), and anything else is
named by Magika, Google's content-type detector, so a refusal says what the file really is. A mismatch is
``UnsupportedFileTypeError`` (415) with a message the user can act on, before any parser sees the bytes. A
file whose name we do not know is accepted by its content: a PDF, an office file or an image as such, and any
text (source code, logs, configuration) as plain text.
"""

from __future__ import annotations

import codecs
import functools
import io
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import Any

from app.rag.errors import UnsupportedFileTypeError
from app.rag.types import FileType


@dataclass(frozen=True)
class Format:
    """One row of the table the README prints: what we accept, how we know it, and what reads it."""

    file_type: FileType
    label: str
    extensions: tuple[str, ...]
    # How the content is told apart, in words: the column "detected by" of the README's table.
    detected_by: str
    # The maintained library that reads it: the column "parser".
    parser: str


_TEXT = "text (any encoding we detect)"
_OOXML = "ZIP with {}"
_ODF = "ZIP whose mimetype is {}"
_OLE = "OLE2 file with a {} stream"

FORMATS: tuple[Format, ...] = (
    Format(FileType.PDF, "PDF", (".pdf",), "%PDF- signature", "pypdfium2 (text layer), RapidOCR (image-only pages)"),
    Format(FileType.DOCX, "Word (DOCX)", (".docx",), _OOXML.format("word/document.xml"), "python-docx"),
    Format(FileType.ODT, "OpenDocument text (ODT)", (".odt",), _ODF.format("…opendocument.text"), "odfpy"),
    Format(FileType.DOC, "old Word (DOC)", (".doc",), _OLE.format("WordDocument"), "LibreOffice, then python-docx"),
    Format(FileType.PPTX, "PowerPoint (PPTX)", (".pptx",), _OOXML.format("ppt/presentation.xml"), "python-pptx"),
    Format(FileType.ODP, "OpenDocument slides (ODP)", (".odp",), _ODF.format("…opendocument.presentation"), "odfpy"),
    Format(
        FileType.PPT, "old PowerPoint (PPT)", (".ppt",), _OLE.format("PowerPoint Document"),
        "LibreOffice, then python-pptx",
    ),
    Format(FileType.XLSX, "Excel (XLSX)", (".xlsx", ".xlsm"), _OOXML.format("xl/workbook.xml"), "openpyxl (streaming, defusedxml)"),
    Format(FileType.ODS, "OpenDocument sheet (ODS)", (".ods",), _ODF.format("…opendocument.spreadsheet"), "python-calamine"),
    Format(FileType.XLS, "old Excel (XLS)", (".xls",), _OLE.format("Workbook"), "python-calamine"),
    Format(FileType.CSV, "CSV", (".csv",), _TEXT, "csv (standard library)"),
    Format(FileType.TSV, "TSV", (".tsv", ".tab"), _TEXT, "csv (standard library)"),
    Format(FileType.EPUB, "EPUB", (".epub",), _ODF.format("application/epub+zip"), "EbookLib, BeautifulSoup"),
    Format(FileType.EML, "e-mail (EML)", (".eml",), _TEXT, "email (standard library)"),
    Format(FileType.MSG, "Outlook mail (MSG)", (".msg",), _OLE.format("__substg1.0_…"), "extract-msg"),
    Format(FileType.HTML, "HTML", (".html", ".htm", ".xhtml"), _TEXT, "BeautifulSoup (lxml)"),
    Format(FileType.MARKDOWN, "Markdown", (".md", ".markdown"), _TEXT, "our CommonMark heading scan"),
    Format(FileType.MDX, "MDX", (".mdx",), _TEXT, "our CommonMark heading scan, ESM and JSX skipped"),
    Format(FileType.RESTRUCTUREDTEXT, "reStructuredText", (".rst", ".rest"), _TEXT, "docutils"),
    Format(FileType.ASCIIDOC, "AsciiDoc", (".adoc", ".asciidoc"), _TEXT, "our section scan (no Python parser gives positions)"),
    Format(FileType.ORG, "Org", (".org",), _TEXT, "orgparse"),
    Format(FileType.LATEX, "LaTeX source", (".tex", ".latex"), _TEXT, "pylatexenc (plain-text rendering)"),
    Format(FileType.JSON, "JSON", (".json",), _TEXT, "json (standard library)"),
    Format(FileType.JSONL, "JSON Lines", (".jsonl", ".ndjson"), _TEXT, "json (standard library)"),
    Format(FileType.YAML, "YAML", (".yaml", ".yml"), _TEXT, "PyYAML (safe loader)"),
    Format(FileType.XML, "XML", (".xml",), _TEXT, "lxml (no entities, no DTDs)"),
    Format(
        FileType.IMAGE, "image", (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"),
        "image signature", "RapidOCR",
    ),
    Format(FileType.TEXT, "text", (".txt", ".text", ".log"), _TEXT, "our encoding detection"),
    Format(
        FileType.CODE, "any other text (source code, logs, configuration)", (), _TEXT,
        "our encoding detection; cut at line ends only",
    ),
)
FORMAT_OF: dict[FileType, Format] = {row.file_type: row for row in FORMATS}
_EXTENSIONS: dict[str, FileType] = {extension: row.file_type for row in FORMATS for extension in row.extensions}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_EXTENSIONS)

# Formats read through LibreOffice, which is not a Python package: without it they are refused with this.
LIBREOFFICE_TYPES = frozenset({FileType.DOC, FileType.PPT})
_LIBREOFFICE_MISSING = (
    "{name}: {label} files are converted with LibreOffice, which is not installed on this server "
    "(install it, for example `apt-get install libreoffice-writer libreoffice-impress`, or save the file as {modern})"
)
_MODERN = {FileType.DOC: ".docx", FileType.PPT: ".pptx"}

_BINARY_TYPES = frozenset(row.file_type for row in FORMATS if row.detected_by != _TEXT)
# Formats people try to upload that we can name, so the error says what to do instead.
_EXTENSION_HINTS = {
    ".rtf": "save the document as .docx or .txt",
    ".pages": "export the document as .docx or PDF",
    ".zip": "upload the documents inside the archive one by one",
}

# Kinds people upload by mistake, named by their signature: Magika needs more bytes than some of these have.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x7fELF", "an executable program"),
    (b"MZ", "a Windows program"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "an RTF document; save it as .docx"),
)
_NAMED_SIGNATURES = tuple(signature for signature, _ in _SIGNATURES)
# Below this confidence Magika's label is a guess, and a wrong name in an error message misleads.
_MAGIKA_MIN_SCORE = 0.8

# Only this much of the file is inspected for text-vs-binary; it keeps detection cheap on large uploads.
SNIFF_BYTES = 8192
# PDF readers tolerate some whitespace before the header; more than this and it is not a PDF we accept.
_PDF_HEADER_SLACK = 1024
_PDF_WHITESPACE = b" \t\r\n\f\x00"
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OOXML_PARTS = {
    "word/document.xml": FileType.DOCX,
    "xl/workbook.xml": FileType.XLSX,
    "ppt/presentation.xml": FileType.PPTX,
}
_ZIP_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": FileType.ODT,
    b"application/vnd.oasis.opendocument.spreadsheet": FileType.ODS,
    b"application/vnd.oasis.opendocument.presentation": FileType.ODP,
    b"application/epub+zip": FileType.EPUB,
}
_IMAGE_MIMES: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"\x89PNG\r\n\x1a\n",), "image/png"),
    ((b"\xff\xd8\xff",), "image/jpeg"),
    ((b"II*\x00", b"MM\x00*"), "image/tiff"),
    ((b"RIFF",), "image/webp"),
)
_IMAGE_SIGNATURES = tuple(signature for signatures, _ in _IMAGE_MIMES[:-1] for signature in signatures)
_OLE_STREAMS = {
    "WordDocument": FileType.DOC,
    "Workbook": FileType.XLS,
    "Book": FileType.XLS,
    "PowerPoint Document": FileType.PPT,
}

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


def formats_table() -> str:
    """The supported formats as the Markdown table the README prints (a test keeps the two the same)."""
    lines = ["| format | extensions | detected by | parser |", "| --- | --- | --- | --- |"]
    for row in FORMATS:
        extensions = ", ".join(f"`{extension}`" for extension in row.extensions) or "any other"
        lines.append(f"| {row.label} | {extensions} | {row.detected_by} | {row.parser} |")
    return "\n".join(lines)


def detect_file_type(filename: str, data: bytes) -> FileType:
    """Return the file's type, or raise ``UnsupportedFileTypeError`` if the extension or content is wrong.

    Never raises anything else, whatever the bytes are.
    """
    name = _display_name(filename)
    extension = _extension(name)
    expected = _EXTENSIONS.get(extension)
    found = identify_container(data)
    if expected is None:
        file_type = _by_content_alone(name, extension, data, found)
    elif expected in _BINARY_TYPES:
        if found is not expected:
            raise _mismatch(name, expected, data, found)
        file_type = expected
    else:
        problem = None if found is None else f"it is {_a(FORMAT_OF[found].label)} file"
        problem = problem or _text_problem(data)
        if problem is not None:
            raise _mismatch(name, expected, data, found, problem)
        file_type = expected
    if file_type in LIBREOFFICE_TYPES and libreoffice() is None:
        raise UnsupportedFileTypeError(
            _LIBREOFFICE_MISSING.format(name=name, label=FORMAT_OF[file_type].label, modern=_MODERN[file_type]),
            param="file",
        )
    return file_type


def identify_container(data: bytes) -> FileType | None:
    """The binary format ``data`` is by its structure (signature, ZIP members, OLE streams), else ``None``."""
    head = data[:SNIFF_BYTES]
    if _is_pdf(head):
        return FileType.PDF
    if head.startswith(_ZIP_SIGNATURES):
        return _zip_type(data)
    if head.startswith(_OLE_SIGNATURE):
        return _ole_type(data)
    if head.startswith(_IMAGE_SIGNATURES) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return FileType.IMAGE
    return None


def content_mime(file_type: FileType, data: bytes) -> str:
    """The media type to store for an upload: the format's, or for an image, its own (``image/png``, …)."""
    if file_type is FileType.IMAGE:
        for signatures, mime in _IMAGE_MIMES:
            if data.startswith(signatures) or (mime == "image/webp" and data[8:12] == b"WEBP"):
                return mime
    return file_type.mime


def libreoffice() -> str | None:
    """The LibreOffice program that converts legacy Office files, if one is installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def describe_content(data: bytes) -> str:
    """What the bytes are, as a phrase that follows "it is": "a PNG image", "a ZIP archive", "Python source".

    Signatures answer for the common kinds, whatever the file's length; Magika names the rest when it is sure.
    """
    if not data:
        return "an empty file"
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    found = identify_container(data)
    if found is not None:
        return _a(FORMAT_OF[found].label) + " file"
    try:
        result = _magika().identify_bytes(data)
    # Detection only words an error message; a detector failure must not become the user's error.
    except Exception:
        return "binary data"
    if result.score < _MAGIKA_MIN_SCORE or result.output.label in ("unknown", "txt"):
        return "text" if result.output.is_text else "binary data"
    description = str(result.output.description)
    # "ZIP archive data" reads "zip archive data" lowercased, "Python source" must not.
    return description if description[1:2].isupper() else description[:1].lower() + description[1:]


@functools.cache
def _magika() -> Any:
    # Loaded on the first refusal that needs naming (~0.4 s), then kept: detection is per upload.
    from magika import Magika

    return Magika()


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


def _by_content_alone(name: str, extension: str, data: bytes, found: FileType | None) -> FileType:
    hint = _EXTENSION_HINTS.get(extension)
    if found is not None and hint is None:
        return found
    is_text = data and not data.startswith(_NAMED_SIGNATURES) and _text_problem(data) is None
    if found is None and hint is None and is_text:
        return FileType.CODE
    if not extension:
        message = f"{name}: the file name has no extension and its content is {describe_content(data)}"
    else:
        message = f"{name}: unsupported file type '{extension}' (the content is {describe_content(data)})"
    message += f"; supported: {', '.join(SUPPORTED_EXTENSIONS)}, and any text file"
    raise UnsupportedFileTypeError(f"{message} ({hint})" if hint else message, param="file")


def _mismatch(
    name: str, expected: FileType, data: bytes, found: FileType | None, problem: str | None = None
) -> UnsupportedFileTypeError:
    label = FORMAT_OF[expected].label
    if problem is None:
        if found is not None:
            problem = f"it is {_a(FORMAT_OF[found].label)} file"
        elif data.startswith(_OLE_SIGNATURE) and expected in (FileType.DOCX, FileType.XLSX, FileType.PPTX):
            # Office wraps password-protected files in this same OLE container.
            problem = "it is an old-format or password-protected Office file; remove the password and save it again"
        else:
            problem = f"it is {describe_content(data)}"
    return UnsupportedFileTypeError(
        f"{name}: the extension says {label} but the content is not {_a(label)} file ({problem})", param="file"
    )


def _a(label: str) -> str:
    # "an HTML file", "an XML file": acronyms whose first letter is spoken with a vowel.
    spoken_vowel = label[:1].lower() in "aeiou" or (label[:2].isupper() and label[:1] in "FHLMNRSX")
    return f"an {label}" if spoken_vowel else f"a {label}"


def _display_name(filename: str) -> str:
    # Browsers on Windows may send a full client path; only the last component means anything to the user.
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or "the file"


def _extension(name: str) -> str:
    _, dot, suffix = name.rpartition(".")
    if not dot:
        return ""
    return f".{suffix.lower()}"


def _is_pdf(data: bytes) -> bool:
    head = data[: _PDF_HEADER_SLACK + 5]
    stripped = head.lstrip(_PDF_WHITESPACE)
    return stripped.startswith(b"%PDF-") and len(head) - len(stripped) <= _PDF_HEADER_SLACK


def _zip_type(data: bytes) -> FileType | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = b""
            if "mimetype" in names and archive.getinfo("mimetype").file_size < 200:
                mimetype = archive.read("mimetype").strip()
    # zipfile raises a zoo of types (BadZipFile, OSError, ValueError, EOFError, ...) on damaged archives, and
    # this function must answer for any bytes: every failure simply means "not a readable ZIP".
    except Exception:
        return None
    for part, file_type in _OOXML_PARTS.items():
        if part in names:
            return file_type
    return _ZIP_MIMETYPES.get(mimetype)


def _ole_type(data: bytes) -> FileType | None:
    import olefile

    try:
        with olefile.OleFileIO(data) as ole:
            streams = {"/".join(path) for path in ole.listdir(streams=True, storages=False)}
    # olefile, like zipfile, raises many types on damaged files; each means "not an OLE file we can read".
    except Exception:
        return None
    if any(stream.startswith("__substg1.0_") for stream in streams):
        return FileType.MSG
    for stream, file_type in _OLE_STREAMS.items():
        if stream in streams:
            return file_type
    return None


def _text_problem(data: bytes) -> str | None:
    sample = data[:SNIFF_BYTES]
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            if codec == "utf-8-sig":
                break  # UTF-8 text can still hide binary junk after its BOM; check it like any other text
            if _decodes_plausibly(sample, codec):
                return None
            return "it starts with a Unicode byte-order mark but does not decode as Unicode text"
    if (b"\x00" in sample or _control_heavy(sample)) and _bomless_utf16(sample) is None:
        kind = describe_content(data)
        return "it contains binary data" if kind == "binary data" else f"it contains binary data: {kind}"
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
