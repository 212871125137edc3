"""Checked citations: every quote wenda returns is a span of the stored document text, and every citation
is kept only when the cited passage really supports the sentence that cites it.

The model cites passages by number (``[2]``). For each answer sentence and each number it cites, we look
for the passage span (one or two of its sentences) that shares the most content with the answer sentence.
If enough of the sentence is found there, the citation stands, with that span as its quote and its
character offsets in the document; otherwise it is dropped. A sentence that cites nothing is matched against
every passage the same way, so an answer that forgot its markers can still be supported. Sentences left
without support are reported as such, never silently passed off as grounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# [1], [1, 2], [1][2], 【1】, [^1]
_MARKER = re.compile(r"[\[【]\^?\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]】]")
_LEADING_MARKERS = re.compile(r"(?:\s*[\[【]\^?\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[\]】])+")
# Sentence ends in both languages; a period ends an English sentence only before whitespace or the end.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)(?=\s+[^a-z\s]|\s*$)|\n+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[a-z0-9][a-z0-9_\-./]*", re.IGNORECASE)

# Numbers (0002, 3.14, 2048) and ASCII tokens with a path, option or dot in them (/etc/fstab, --reference, a.b).
# Boundaries are ASCII on purpose: in Python every CJK character is \w, and "设置成0002变得" holds a number.
_EXACT = re.compile(
    r"(?<![A-Za-z0-9_.])(?:\d+(?:[.:]\d+)*|[A-Za-z0-9_]*[/\-.][A-Za-z0-9_/\-.]*[A-Za-z0-9_])(?![A-Za-z0-9_])"
)

MIN_SUPPORT = 0.45  # share of the sentence's content features that must appear in the quoted span
MIN_SHARED = 2  # and at least this many, so that a one-word sentence cannot be "supported" by chance


@dataclass(frozen=True)
class Passage:
    """A numbered passage as the model saw it; ``start`` is the chunk's offset in its document."""

    number: int
    chunk_id: int
    document_id: int
    source: str
    text: str
    start: int
    section: str = ""


@dataclass(frozen=True)
class Citation:
    chunk_id: int
    document_id: int
    source: str
    quote: str
    start: int
    end: int
    passage: int
    support: float


@dataclass(frozen=True)
class CheckedSentence:
    text: str
    citations: tuple[int, ...]  # indexes into CheckedAnswer.citations
    supported: bool


@dataclass(frozen=True)
class CheckedAnswer:
    text: str  # the answer with its markers renumbered to the verified citations
    citations: tuple[Citation, ...]
    sentences: tuple[CheckedSentence, ...]
    dropped_markers: int

    @property
    def supported_share(self) -> float:
        content = [s for s in self.sentences if s.text.strip()]
        return sum(s.supported for s in content) / len(content) if content else 0.0


def features(text: str) -> set[str]:
    """Content features: CJK character bigrams (and lone characters) plus lower-cased words."""
    found: set[str] = set()
    lowered = text.lower()
    for run in re.findall(r"[\u3400-\u9fff]+", lowered):
        if len(run) == 1:
            found.add(run)
        found.update(run[i : i + 2] for i in range(len(run) - 1))
    found.update(word.strip("./-") for word in _WORD.findall(lowered) if len(word.strip("./-")) > 1)
    return found


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of ``text``, whitespace trimmed, empty ones skipped."""
    spans = []
    position = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.group(0).startswith("\n") else match.end()
        spans.append((position, end))
        position = match.end()
    spans.append((position, len(text)))
    trimmed: list[tuple[int, int]] = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        leading = _LEADING_MARKERS.match(text, start, end)
        if trimmed and leading and leading.end() > start:
            # "... done. [2] Next": markers written after the full stop belong to the sentence before.
            trimmed[-1] = (trimmed[-1][0], leading.end())
            start = leading.end()
            while start < end and text[start].isspace():
                start += 1
        if end <= start:
            continue
        if trimmed and not _MARKER.sub("", text[start:end]).strip(" \t。.!?！？;；"):
            # "... done. [2]": a marker written after the full stop still belongs to that sentence.
            trimmed[-1] = (trimmed[-1][0], end)
        else:
            trimmed.append((start, end))
    return trimmed


def exact_tokens(text: str) -> set[str]:
    """Numbers, paths, options and dotted names: a sentence may only be supported by a span that has each
    of them verbatim (``umask 0022`` is not supported by a passage that says ``0002``)."""
    return {match.lower() for match in _EXACT.findall(text)}


def best_span(
    claim: set[str], passage_text: str, exact: frozenset[str] = frozenset()
) -> tuple[float, int, int]:
    """The one- or two-sentence span of the passage that covers most of ``claim`` and contains every one of
    ``exact`` (compared in lower case): (support, start, end)."""
    if not claim:
        return 0.0, 0, 0
    sentences = split_sentences(passage_text)
    best = (0.0, 0, 0)
    for i, (start, _) in enumerate(sentences):
        for last in range(i, min(i + 2, len(sentences))):
            span_end = sentences[last][1]
            if exact and not exact <= exact_tokens(passage_text[start:span_end]):
                continue
            shared = claim & features(passage_text[start:span_end])
            # A claim with fewer than MIN_SHARED features ("No.", "Yes [1].") is too small to check: never supported.
            support = len(shared) / len(claim) if len(shared) >= MIN_SHARED else 0.0
            # Strictly better only: on a tie the shorter span, found first, stays as the tighter quote.
            if support > best[0] + 1e-9:
                best = (support, start, span_end)
    return best


def quote_matches(document_text: str, start: int, end: int, quote: str) -> bool:
    """Whether a citation's offsets point at exactly its quote in the stored text."""
    return 0 <= start < end <= len(document_text) and document_text[start:end] == quote


def cited_numbers(sentence: str) -> list[int]:
    numbers: list[int] = []
    for match in _MARKER.finditer(sentence):
        for piece in re.split(r"[,，、]", match.group(1)):
            number = int(piece)
            if number not in numbers:
                numbers.append(number)
    return numbers


def strip_markers(text: str) -> str:
    return re.sub(r"\s+([。！？；.!?;，,])", r"\1", _MARKER.sub("", text)).strip()


def check_answer(answer: str, passages: Sequence[Passage]) -> CheckedAnswer:
    by_number = {p.number: p for p in passages}
    citations: list[Citation] = []
    index_of: dict[tuple[int, int, int], int] = {}
    checked: list[CheckedSentence] = []
    rewritten: list[str] = []
    dropped = 0
    for start, end in split_sentences(answer):
        sentence = answer[start:end]
        plain = strip_markers(sentence)
        claim = features(plain)
        exact = frozenset(exact_tokens(plain))
        numbers = cited_numbers(sentence)
        candidates = [by_number[n] for n in numbers if n in by_number]
        dropped += len(numbers) - len(candidates)
        if not numbers:
            candidates = list(passages)
        kept: list[int] = []
        scored = [(best_span(claim, passage.text, exact), passage) for passage in candidates]
        if not numbers:
            # An unmarked sentence gets its single best-supporting passage, not merely the first good enough.
            scored = sorted(scored, key=lambda item: -item[0][0])[:1]
        for (support, span_start, span_end), passage in scored:
            if support < MIN_SUPPORT:
                dropped += 1 if numbers else 0
                continue
            key = (passage.chunk_id, span_start, span_end)
            if key not in index_of:
                index_of[key] = len(citations)
                citations.append(
                    Citation(
                        chunk_id=passage.chunk_id,
                        document_id=passage.document_id,
                        source=passage.source,
                        quote=passage.text[span_start:span_end],
                        start=passage.start + span_start,
                        end=passage.start + span_end,
                        passage=passage.number,
                        support=round(support, 3),
                    )
                )
            kept.append(index_of[key])
        kept = sorted(set(kept))
        checked.append(CheckedSentence(text=plain, citations=tuple(kept), supported=bool(kept)))
        markers = "".join(f"[{i + 1}]" for i in kept)
        rewritten.append(_attach(plain, markers))
    separator = "" if _CJK.search(answer) else " "
    return CheckedAnswer(
        text=separator.join(rewritten).strip(),
        citations=tuple(citations),
        sentences=tuple(checked),
        dropped_markers=dropped,
    )


def _attach(sentence: str, markers: str) -> str:
    """Put markers before the sentence's closing punctuation, as the model was asked to."""
    if not markers:
        return sentence
    if sentence and sentence[-1] in "。！？；.!?;":
        return (
            f"{sentence[:-1]} {markers}{sentence[-1]}"
            if not _CJK.search(sentence)
            else f"{sentence[:-1]}{markers}{sentence[-1]}"
        )
    return f"{sentence} {markers}"
