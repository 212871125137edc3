"""Helpers for parser tests: parse as the worker does, and read a parsed document's headings and lines."""

from __future__ import annotations

from app.rag.types import FileType, ParsedDocument
from ingest.parse_limits import parse_in_subprocess


def parse_limited(data: bytes, file_type: FileType) -> ParsedDocument:
    """Parse as the worker does, under the default Settings.parse_timeout_seconds and parse_memory_mb."""
    return parse_in_subprocess(data, file_type, timeout_seconds=120.0, memory_mb=2048)


def checked_headings(document: ParsedDocument) -> list[tuple[int, str]]:
    """(level, title) of each heading, once each is checked to sit at its offset in the text."""
    for heading in document.headings:
        assert document.text[heading.start : heading.start + len(heading.title)] == heading.title
    return [(heading.level, heading.title) for heading in document.headings]


def text_lines(document: ParsedDocument) -> list[str]:
    return document.text.split("\n")
