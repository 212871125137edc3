"""Chinese-aware chunking with exact character offsets.

A document is first cut into sections at its headings, so a chunk never straddles two sections and always
knows its heading path. Each section is then split on paragraph, line and sentence ends — Chinese
``。！？；`` as well as English punctuation — into pieces measured in the embedding model's own tokens, with
overlap. Every chunk's text is exactly ``document.text[start:end]``, which is what later citations quote.

Text with nowhere to split (a long run without whitespace or punctuation: unpunctuated Chinese, a base64
blob) is cut into fixed token windows instead. The recursive splitter would split such a run into single
characters, measure each one and merge them back into chunks far below the target; here each window is
measured once or twice, so the cost stays linear in the text and every window reaches the target size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.rag.types import ChunkDraft, FileType, Heading, ParsedDocument

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

# Source code, logs and configuration are cut at line ends only: ". " or "; " inside a line of code is not the
# end of anything.
LINE_SEPARATORS = ["\n\n", "\n", ""]

_WHITESPACE = re.compile(r"\s+")

# Every separator above but "", as one character class: a run of this many characters or more with none of
# them has no place the splitter could cut, so it goes to fixed token windows. Ordinary prose (Chinese has a
# comma every few dozen characters) never comes close.
_UNBROKEN_RUN_CHARS = 128
_UNBROKEN_RUN = re.compile(
    "[^" + re.escape("".join(sorted({c for sep in SEPARATORS for c in sep if not c.isspace()}))) + r"\s]"
    + f"{{{_UNBROKEN_RUN_CHARS},}}"
)


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
        separators=LINE_SEPARATORS if document.file_type is FileType.CODE else SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_tokens,
        chunk_overlap=overlap_tokens,
        length_function=count_tokens,
        add_start_index=True,
        strip_whitespace=True,
    )
    text = document.text
    drafts: list[ChunkDraft] = []

    def add(start: int, piece: str, section: _Section) -> None:
        drafts.append(
            ChunkDraft(
                ordinal=len(drafts),
                text=piece,
                start=start,
                end=start + len(piece),
                section=section.path,
                token_count=count_tokens(piece),
            )
        )

    for section in _sections(document):
        for segment_start, segment_end, unbroken in _segments(text, section.start, section.end):
            if unbroken:
                for start, end in _token_windows(
                    text,
                    segment_start,
                    segment_end,
                    count_tokens=count_tokens,
                    chunk_tokens=chunk_tokens,
                    overlap_tokens=overlap_tokens,
                ):
                    add(start, text[start:end], section)
                continue
            segment_text = text[segment_start:segment_end]
            if not segment_text.strip():
                continue
            previous: tuple[int, int] | None = None  # (start, end) of the segment's previous piece
            for piece in splitter.create_documents([segment_text]):
                content = piece.page_content
                start = segment_start + int(piece.metadata["start_index"])
                if not _follows(text, start, content, previous, segment_start):
                    # The splitter's offset search can jump to a later copy of repeated text. A piece starts
                    # after the previous one's start (its overlap is a proper suffix of it), so the leftmost
                    # copy from there is never past its true place and is always found.
                    start = text.find(content, previous[0] + 1 if previous else segment_start, segment_end)
                    if start < 0:
                        raise AssertionError("chunk text not found in its document")
                add(start, content, section)
                previous = (start, start + len(content))
    return drafts


def _follows(text: str, start: int, content: str, previous: tuple[int, int] | None, segment_start: int) -> bool:
    """Whether the splitter's offset for a piece is plausible: the text is there, and it starts after the
    previous piece's start and no later than its end plus whitespace."""
    if text[start : start + len(content)] != content:
        return False
    if previous is None:
        return not text[segment_start:start].strip()
    previous_start, previous_end = previous
    return previous_start < start and not text[previous_end:start].strip()


def _segments(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """``text[start:end]`` as consecutive (start, end, unbroken) pieces: the long runs with nowhere to split,
    and the text between them."""
    segments: list[tuple[int, int, bool]] = []
    position = start
    for run in _UNBROKEN_RUN.finditer(text, start, end):
        if run.start() > position:
            segments.append((position, run.start(), False))
        segments.append((run.start(), run.end(), True))
        position = run.end()
    if position < end:
        segments.append((position, end, False))
    return segments


def _token_windows(
    text: str,
    start: int,
    end: int,
    *,
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[tuple[int, int]]:
    """Fixed windows of at most ``chunk_tokens`` over ``text[start:end]``, overlapping by about
    ``overlap_tokens``: sized in characters from the run's own characters-per-token, then shrunk in
    proportion until the tokenizer agrees, so each window is measured a bounded number of times."""
    sample = text[start : min(end, start + 8 * chunk_tokens)]
    chars_per_token = len(sample) / max(count_tokens(sample), 1)
    window = max(1, int(chunk_tokens * chars_per_token))
    overlap = int(overlap_tokens * chars_per_token)
    windows: list[tuple[int, int]] = []
    position = start
    while position < end:
        size = min(window, end - position)
        while size > 1 and (tokens := count_tokens(text[position : position + size])) > chunk_tokens:
            size = max(1, min(size - 1, int(size * chunk_tokens / tokens)))
        windows.append((position, position + size))
        if position + size >= end:
            break
        position += max(1, size - overlap)
    return windows


def passage_text(*, title: str, section: str, text: str) -> str:
    """What is embedded and indexed for a chunk: its text with the document title and heading path in front,
    so a passage that never names its subject can still be found by it."""
    context = " / ".join(part for part in (collapse_whitespace(title), section) if part)
    body = collapse_whitespace(text)
    return f"{context}\n{body}" if context and not body.startswith(context) else body
