"""Domain types shared by ingestion, retrieval and answering: frozen, plain data, no framework imports.

Evidence (document spans, facts, corrections) has a module of its own, ``app.rag.evidence``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FileType(enum.StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    RESTRUCTUREDTEXT = "rst"
    TEXT = "text"

    @property
    def mime(self) -> str:
        return _MIME[self]


_MIME = {
    FileType.PDF: "application/pdf",
    FileType.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    FileType.HTML: "text/html",
    FileType.MARKDOWN: "text/markdown",
    FileType.RESTRUCTUREDTEXT: "text/x-rst",
    FileType.TEXT: "text/plain",
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
