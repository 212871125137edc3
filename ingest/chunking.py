"""Chinese-aware chunking with exact character offsets.

A document is first cut into sections at its headings, so a chunk never straddles two sections and always
knows its heading path. Each section is then split on paragraph, line and sentence ends — Chinese
``。！？；`` as well as English punctuation — into pieces measured in the embedding model's own tokens, with
overlap. Every chunk's text is exactly ``document.text[start:end]``, which is what later citations quote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.rag.types import ChunkDraft, Heading, ParsedDocument

# Tried in order: the splitter falls back to the next only for pieces still too large.
SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    ". ",
    "! ",
    "? ",
    "; ",
    "，",
    ", ",
    "、",
    " ",
    "",
]

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    path: str


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _sections(document: ParsedDocument) -> list[_Section]:
    text = document.text
    headings = sorted(document.headings, key=lambda h: h.start)
    stack: list[Heading] = []
    sections: list[_Section] = []
    if not headings or headings[0].start > 0:
        sections.append(_Section(0, headings[0].start if headings else len(text), ""))
    for i, heading in enumerate(headings):
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        end = headings[i + 1].start if i + 1 < len(headings) else len(text)
        sections.append(_Section(heading.start, end, " > ".join(h.title for h in stack)))
    return _merge_heading_only(text, [s for s in sections if text[s.start : s.end].strip()])


def _merge_heading_only(text: str, sections: list[_Section]) -> list[_Section]:
    """A heading with no body of its own joins the section after it rather than becoming a chunk alone."""
    merged: list[_Section] = []
    carry_start: int | None = None
    for i, section in enumerate(sections):
        body = text[section.start : section.end].strip()
        start = section.start if carry_start is None else carry_start
        if "\n" not in body and len(body) < 120 and i + 1 < len(sections) and section.path:
            carry_start = start
            continue
        merged.append(_Section(start, section.end, section.path))
        carry_start = None
    return merged


def split_document(
    document: ParsedDocument,
    *,
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[ChunkDraft]:
    splitter = RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_tokens,
        chunk_overlap=overlap_tokens,
        length_function=count_tokens,
        add_start_index=True,
        strip_whitespace=True,
    )
    text = document.text
    drafts: list[ChunkDraft] = []
    for section in _sections(document):
        section_text = text[section.start : section.end]
        for piece in splitter.create_documents([section_text]):
            start = section.start + int(piece.metadata["start_index"])
            if start < section.start or text[start : start + len(piece.page_content)] != piece.page_content:
                # The splitter's offset search can miss when a piece repeats; find it again ourselves.
                found = text.find(piece.page_content, drafts[-1].start + 1 if drafts else section.start)
                if found < 0:
                    raise AssertionError("chunk text not found in its document")
                start = found
            end = start + len(piece.page_content)
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    text=piece.page_content,
                    start=start,
                    end=end,
                    section=section.path,
                    token_count=count_tokens(piece.page_content),
                )
            )
    return drafts


def passage_text(*, title: str, section: str, text: str) -> str:
    """What is embedded and indexed for a chunk: its text with the document title and heading path in front,
    so a passage that never names its subject can still be found by it."""
    context = " / ".join(part for part in (collapse_whitespace(title), section) if part)
    body = collapse_whitespace(text)
    return f"{context}\n{body}" if context and not body.startswith(context) else body
