"""Assemble a document's text block by block, recording where each heading starts.

Every parser of a structured format (slides, sheets, chapters, mail) produces the same shape: headings that
open sections, and blocks of text under them, joined by blank lines. Offsets are counted here, once, so each
``Heading.start`` is exactly where its title sits in ``ParsedDocument.text``.
"""

from __future__ import annotations

import re

from app.rag.types import FileType, Heading, ParsedDocument

# NUL breaks PostgreSQL text columns; lone surrogates (from broken font maps) cannot be encoded as UTF-8.
_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")
_WHITESPACE_RUN = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_MAX_TITLE_CHARS = 200


def clean_block(text: str) -> str:
    """A block's text with unsafe characters gone, newlines normalised and at most one blank line in a row."""
    text = _UNSAFE_CHARS.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


def one_line(text: str) -> str:
    """Text with every run of whitespace (newlines included) made one space."""
    return _WHITESPACE_RUN.sub(" ", _UNSAFE_CHARS.sub("", text)).strip()


class DocumentBuilder:
    """Collects headings and blocks; ``build`` returns the ``ParsedDocument``.

    ``heading`` writes its title as a block of its own, so the title is part of the text a citation can quote
    and the section it opens starts there. Empty blocks and headings are skipped.
    """

    def __init__(self, file_type: FileType) -> None:
        self._file_type = file_type
        self._parts: list[str] = []
        self._length = 0
        self._headings: list[Heading] = []
        self.metadata: list[tuple[str, str]] = []

    @property
    def length(self) -> int:
        """Characters written so far: a budget check for parsers of formats that can grow without bound."""
        return self._length

    def heading(self, level: int, title: str) -> None:
        words = one_line(title)
        if not words:
            return
        start = self._append(words)
        self._headings.append(Heading(start=start, level=max(1, min(level, 6)), title=words[:_MAX_TITLE_CHARS]))

    def block(self, text: str) -> None:
        cleaned = clean_block(text)
        if cleaned:
            self._append(cleaned)

    def build(self, title: str = "") -> ParsedDocument:
        if not title and self._headings:
            title = self._headings[0].title
        return ParsedDocument(
            text="".join(self._parts),
            file_type=self._file_type,
            title=one_line(title)[:_MAX_TITLE_CHARS],
            headings=tuple(self._headings),
            metadata=tuple(self.metadata),
        )

    def _append(self, text: str) -> int:
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        return start
