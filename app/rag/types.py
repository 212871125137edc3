"""Domain types shared by ingestion, retrieval and answering: frozen, plain data, no framework imports.

Evidence (document spans, facts, corrections) has a module of its own, ``app.rag.evidence``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FileType(enum.StrEnum):
    """What an upload was read as; ``app.rag.filetypes.FORMATS`` says which extensions and content map here."""

    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    MDX = "mdx"
    RESTRUCTUREDTEXT = "rst"
    ASCIIDOC = "asciidoc"
    ORG = "org"
    LATEX = "latex"
    TEXT = "text"
    # Text of any other kind, taken by its content whatever its name: source code, logs, configuration.
    CODE = "code"
    CSV = "csv"
    TSV = "tsv"
    XLSX = "xlsx"
    ODS = "ods"
    XLS = "xls"
    JSON = "json"
    JSONL = "jsonl"
    YAML = "yaml"
    XML = "xml"
    PPTX = "pptx"
    ODP = "odp"
    ODT = "odt"
    EPUB = "epub"
    EML = "eml"
    MSG = "msg"
    IMAGE = "image"
    DOC = "doc"
    PPT = "ppt"

    @property
    def mime(self) -> str:
        return _MIME[self]


_MIME = {
    FileType.PDF: "application/pdf",
    FileType.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    FileType.HTML: "text/html",
    FileType.MARKDOWN: "text/markdown",
    FileType.MDX: "text/mdx",
    FileType.RESTRUCTUREDTEXT: "text/x-rst",
    FileType.ASCIIDOC: "text/asciidoc",
    FileType.ORG: "text/org",
    FileType.LATEX: "application/x-tex",
    FileType.TEXT: "text/plain",
    FileType.CODE: "text/plain",
    FileType.CSV: "text/csv",
    FileType.TSV: "text/tab-separated-values",
    FileType.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    FileType.ODS: "application/vnd.oasis.opendocument.spreadsheet",
    FileType.XLS: "application/vnd.ms-excel",
    FileType.JSON: "application/json",
    FileType.JSONL: "application/jsonl",
    FileType.YAML: "application/yaml",
    FileType.XML: "application/xml",
    FileType.PPTX: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    FileType.ODP: "application/vnd.oasis.opendocument.presentation",
    FileType.ODT: "application/vnd.oasis.opendocument.text",
    FileType.EPUB: "application/epub+zip",
    FileType.EML: "message/rfc822",
    FileType.MSG: "application/vnd.ms-outlook",
    FileType.IMAGE: "image/*",
    FileType.DOC: "application/msword",
    FileType.PPT: "application/vnd.ms-powerpoint",
}


@dataclass(frozen=True)
class Heading:
    """A heading found by a parser: ``start`` is its character offset in ``ParsedDocument.text``."""

    start: int
    level: int
    title: str


@dataclass(frozen=True)
class ParsedDocument:
    """The text a document's chunks and citations are measured against."""

    text: str
    file_type: FileType
    title: str = ""
    headings: tuple[Heading, ...] = field(default_factory=tuple)
    # What the format says about the document beyond its text: an e-mail's From, To, Date and Subject, say.
    metadata: tuple[tuple[str, str], ...] = ()
    # The 1-based pages (1 for an image) whose text came from OCR rather than a text layer.
    ocr_pages: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has an id: ``text == document_text[start:end]`` always holds."""

    ordinal: int
    text: str
    start: int
    end: int
    section: str
    token_count: int


@dataclass(frozen=True)
class ScoredId:
    """An id in a ranking with its score: a chunk's id in chunk rankings, a document's in document rankings
    (document-level fusion ranks documents by their best chunks and by BM25 over their whole text)."""

    id: int
    score: float
    # Ranking from ratings (app.rag.priors): the chunk's net vote and the places it moved (positive: up).
    prior: float = 0.0
    shift: int = 0


class AnswerStatus(enum.StrEnum):
    ANSWERED = "answered"  # grounded: the checked answer was given
    REFUSED = "refused"  # the refusal was given (the record says why)
    CANCELLED = "cancelled"  # the client went away before the answer was finished
    FAILED = "failed"  # an error ended it


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
