"""Checked citations: every quote wenda returns is a span of the stored document text, and every citation
is kept only when the cited passage really supports the sentence that cites it.

A sentence's *claim* is what it adds to the question: its content words that the question does not already
hold, and its exact tokens (numbers, paths, options, dotted names) that the question does not already hold.
Restating the question claims nothing, so a sentence that only does that is never supported; the one
exception is English words the question has, put side by side in an order it does not ("Use git branch" for
"How do I list branches in Git?"), which claim that pairing.

For each sentence we look for the passage span (one or two of its sentences or table rows) that holds every
exact token of the claim verbatim, shares at least one word with the question, and covers the largest share
of the claim's words. At the policy's ``min_support`` or more the sentence is supported, with that span as
its quote and its character offsets in the document. A verified correction is checked the same way (offsets
into its own text); a fact supports a sentence that writes its value verbatim (see ``app.rag.evidence``).
The passages the model cited are tried first; when none of them supports the sentence, the best passage is
taken instead and the model's marker counts as dropped (small models often number passages wrongly).
Sentences left without support are reported as such, never silently passed off as grounded.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jieba

from app.rag.evidence import DocumentSpan, Evidence, EvidenceKind, Fact
from app.rag.lexical import STOPWORDS, initialize_tokenizer
from app.rag.refusal import RefusalPolicy

# [1], [1, 2], [1][2], 【1】, [^1]
_MARKER = re.compile(r"[\[【]\^?\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]】]")
_LEADING_MARKERS = re.compile(r"(?:\s*[\[【]\^?\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[\]】])+")
# Sentence ends in both languages; a period ends an English sentence only before whitespace or the end.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)(?=\s+[^a-z\s]|\s*$)|\n+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
# ASCII words, kept whole with the punctuation that makes paths, options and versions (apt-mark, v2.5:fs/a.c).
_ASCII_WORD = re.compile(r"[a-z0-9][a-z0-9_\-./+~:]*")
# A space before punctuation that ends a clause, left behind when a marker is removed ("done [1]." → "done.").
# An ASCII mark only counts when a space or the end follows, so "in .git/config" keeps its space.
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([。！？；，])|\s+([.!?;,])(?=\s|$)")

# Exact tokens. Boundaries are ASCII on purpose: in Python every CJK character is \w, and "设置成0002变得"
# holds a number. A number may carry a unit ("200MB" holds 200); a token with a path, option or dot in it is
# taken whole (/etc/fstab, --no-dangling, -D, v2.39.5, C.UTF-8). Case matters: -d and -D are different options.
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.\-/])\d+(?:[.:]\d+)*(?![0-9])")
_TECHNICAL = re.compile(
    r"(?<![A-Za-z0-9_.\-/])[A-Za-z0-9_~]*[/\-.][A-Za-z0-9_/\-.~]*[A-Za-z0-9_](?![A-Za-z0-9_])"
)
# Names written with digits or in capitals: MD5, ext4, iproute2, SIGKILL, ORIG_HEAD, CP437.
_CODE_NAME = re.compile(
    r"(?<![A-Za-z0-9_.\-/])(?:[A-Za-z_]+[0-9][A-Za-z0-9_]*|[A-Z][A-Z0-9_]*[A-Z0-9])"
    r"(?![A-Za-z0-9_]|[.\-/][A-Za-z0-9])"
)

# Code the answer quotes: `git repack`, or a shell line "$ git repack". It must be in the quote as written.
_CODE_SPAN = re.compile(r"`([^`\n]+)`|^\s*\$\s+(\S.*?)\s*$", re.MULTILINE)

# Words a model wraps around an answer ("you can use …", "需要运行 …"): no claim of their own.
_FILLER = frozenset(
    {
        "使用",
        "可以",
        "需要",
        "应该",
        "通过",
        "进行",
        "就是",
        "这样",
        "那么",
        "然后",
        "用",
        "得到",
        "里",
        "时候",
        "use",
        "using",
        "used",
        "run",
        "command",
        "commands",
        "will",
        "need",
        "needs",
        "your",
        "following",
        "example",
        "called",
        "also",
        "just",
        "simply",
        "way",
    }
)

# English inflections ignored when words are compared (renames ~ rename ~ renamed).
_SUFFIXES = ("ing", "ed", "es", "s", "e", "d")

DEFAULT_POLICY = RefusalPolicy()

@dataclass(frozen=True)
class Passage:
    """A numbered piece of evidence as the model saw it."""

    number: int
    evidence: Evidence

    @property
    def text(self) -> str:
        return self.evidence.text


@dataclass(frozen=True)
class Citation:
    """A checked citation. ``quote == text[start:end]`` of what it cites: the stored document text for a
    document span (offsets in the document), the correction's text, or the fact's value."""

    kind: EvidenceKind
    passage: int
    quote: str
    start: int
    end: int
    support: float
    chunk_id: int | None = None
    document_id: int | None = None
    source: str = ""  # the document's filename, or where a fact came from
    name: str = ""  # a fact's name
    feedback_id: int | None = None


@dataclass(frozen=True)
class CheckedSentence:
    text: str
    citations: tuple[int, ...]  # indexes into CheckedAnswer.citations
    supported: bool
    claims: bool = True  # False when the sentence only restates the question


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

    @property
    def answer_supported(self) -> bool:
        """The first sentence that claims anything is supported: that sentence is the answer; when it is not
        supported, what follows is usually passage text copied around a question the passages do not answer."""
        return next((s.supported for s in self.sentences if s.claims), False)


@dataclass(frozen=True)
class Claim:
    """What a sentence adds to the question."""

    words: frozenset[str]
    exact: frozenset[str]  # numbers, paths, options: verbatim in the quote
    # Neighbouring English words the question does not have side by side: "Use git branch" answers "How do
    # I list branches in Git?" with the question's own words, in an order that names a command.
    phrases: frozenset[tuple[str, str]] = frozenset()

    def checkable(self, min_words: int) -> bool:
        """Enough to check: an exact token, a phrase, or ``min_words`` words. "It keeps X copies" claims one
        word ("keeps") beyond a question about how many copies are kept, which any passage on the topic would
        seem to support."""
        return bool(self.exact) or bool(self.phrases) or len(self.words) >= min_words

    @property
    def empty(self) -> bool:
        return not (self.words or self.exact or self.phrases)


def content_words(text: str) -> set[str]:
    """Lower-cased content words: jieba's words of Chinese runs and whole ASCII words, without function words."""
    initialize_tokenizer()
    lowered = text.lower()
    words = set()
    for token in _ASCII_WORD.findall(lowered):
        word = token.strip("./-:+~")
        if len(word) > 1 and word not in STOPWORDS and word not in _FILLER:
            words.add(word)
    for run in _CJK_RUN.findall(lowered):
        words.update(w for w in jieba.cut(run) if w not in STOPWORDS and w not in _FILLER)
    return words


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def contains_word(lowered_text: str, word: str) -> bool:
    """``word`` occurs in the lower-cased text: a Chinese word anywhere, an ASCII word only between
    non-alphanumerics, and an English word in its regular inflections too (rename, renames, renamed)."""
    if not word.isascii():
        return word in lowered_text
    if word.isalpha():
        pattern = rf"(?<![a-z0-9]){re.escape(_stem(word))}(?:{'|'.join(_SUFFIXES)})?(?![a-z0-9])"
    else:
        pattern = rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])"
    return re.search(pattern, lowered_text) is not None


def exact_tokens(text: str) -> set[str]:
    """Numbers, paths, options, dotted names, code names (MD5, SIGKILL) and quoted code (`git repack`,
    ``$ git repack``), as written: a sentence may only be supported by a span that has each of them verbatim
    (``umask 0022`` is not supported by a passage that says ``0002``)."""
    code = {(quoted or line).strip() for quoted, line in _CODE_SPAN.findall(text)}
    return (
        set(_NUMBER.findall(text))
        | {token for token in _TECHNICAL.findall(text) if token.strip("./-")}
        | set(_CODE_NAME.findall(text))
        | {snippet for snippet in code if len(snippet) > 1}
    )


def _contains_exact(text: str, token: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", text) is not None


def _english_pairs(text: str) -> set[tuple[str, str]]:
    """Neighbouring English content words of ``text``, stemmed, in their order."""
    stems = [
        _stem(word)
        for token in _ASCII_WORD.findall(text.lower())
        if len(word := token.strip("./-:+~")) > 1
        and word.isalpha()
        and word not in STOPWORDS
        and word not in _FILLER
    ]
    return set(itertools.pairwise(stems))


def claim_of(sentence: str, question: str) -> Claim:
    lowered_question = question.lower()
    words = frozenset(w for w in content_words(sentence) if not contains_word(lowered_question, w))
    exact = frozenset(exact_tokens(sentence) - exact_tokens(question))
    if words or exact:
        return Claim(words=words, exact=exact)
    # Only the question's words: a restatement, unless their order says something the question does not.
    return Claim(
        words=words, exact=exact, phrases=frozenset(_english_pairs(sentence) - _english_pairs(question))
    )


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


def best_span(
    claim: Claim,
    passage_text: str,
    question_words: frozenset[str],
    policy: RefusalPolicy = DEFAULT_POLICY,
) -> tuple[float, int, int]:
    """The span of the passage that best supports ``claim``: (support, start, end), support 0 when none does.

    A span must hold every exact token of the claim and at least one of the question's words (when the
    question has any): a number that merely occurs somewhere ("1769 revisions left") is not an answer."""
    if not claim.checkable(policy.min_claim_words):
        return 0.0, 0, 0
    sentences = split_sentences(passage_text)
    best = (0.0, 0, 0)
    for i, (start, _) in enumerate(sentences):
        for last in range(i, min(i + policy.span_sentences, len(sentences))):
            end = sentences[last][1]
            span = passage_text[start:end]
            if not all(_contains_exact(span, token) for token in claim.exact):
                continue
            lowered = span.lower()
            if question_words and not any(contains_word(lowered, w) for w in question_words):
                continue
            if claim.phrases and not claim.phrases <= _english_pairs(span):
                continue
            found = sum(contains_word(lowered, w) for w in claim.words)
            # A claim of exact tokens or phrases alone is whole once they are all in the span.
            support = found / len(claim.words) if claim.words else 1.0
            # On a tie the shorter span is the tighter quote; between equal lengths the first one found stays.
            tie = abs(support - best[0]) <= 1e-9 and end - start < best[2] - best[1]
            if support > 0 and (support > best[0] + 1e-9 or tie):
                best = (support, start, end)
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
    return _SPACE_BEFORE_PUNCTUATION.sub(lambda m: m.group(1) or m.group(2), _MARKER.sub("", text)).strip()


class _CitationList:
    """Citations in first-use order, one per distinct span."""

    def __init__(self) -> None:
        self.items: list[Citation] = []
        self._index: dict[tuple[int, int, int], int] = {}

    def add(self, passage: Passage, support: float, start: int, end: int) -> int:
        key = (passage.number, start, end)
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append(_citation(passage, round(support, 3), start, end))
        return self._index[key]


def _citation(passage: Passage, support: float, start: int, end: int) -> Citation:
    evidence = passage.evidence
    quote = evidence.text[start:end]
    if isinstance(evidence, DocumentSpan):
        return Citation(
            kind=evidence.kind,
            passage=passage.number,
            quote=quote,
            start=evidence.start + start,
            end=evidence.start + end,
            support=support,
            chunk_id=evidence.chunk_id,
            document_id=evidence.document_id,
            source=evidence.source,
        )
    if isinstance(evidence, Fact):
        # A fact is quoted whole: its value, as the sentence wrote it.
        return Citation(
            kind=evidence.kind,
            passage=passage.number,
            quote=evidence.value,
            start=0,
            end=len(evidence.value),
            support=support,
            source=evidence.source,
            name=evidence.name,
        )
    return Citation(
        kind=evidence.kind,
        passage=passage.number,
        quote=quote,
        start=start,
        end=end,
        support=support,
        feedback_id=evidence.feedback_id,
    )


_SPACES = re.compile(r"\s+")


def _fact_support(claim: Claim, sentence: str, fact: Fact) -> tuple[float, int, int]:
    """A sentence rests on a fact when it writes the fact's value verbatim (spacing aside) and claims no
    number, path or name that the fact (its name, value and the question's words it answers for) does not
    hold: "今天是2026年12月2日" on the clock's date, not "the meeting is in room 3 on 2026-12-02"."""
    value = _SPACES.sub("", fact.value)
    if not value or value not in _SPACES.sub("", sentence):
        return 0.0, 0, 0
    # The fact as the prompt states it ("从今天（2026年12月2日）到2027年1月1日的天数是30天") may be copied whole.
    stated = f"{fact.name} {fact.value} {' '.join(fact.mentions)}"
    if not all(_contains_exact(stated, token) for token in claim.exact):
        return 0.0, 0, 0
    return 1.0, 0, len(fact.value)


def _support(
    claim: Claim, sentence: str, passage: Passage, question_words: frozenset[str], policy: RefusalPolicy
) -> tuple[float, int, int]:
    evidence = passage.evidence
    if isinstance(evidence, Fact):
        return _fact_support(claim, sentence, evidence)
    return best_span(claim, evidence.text, question_words, policy)


def check_answer(
    answer: str, passages: Sequence[Passage], question: str = "", policy: RefusalPolicy = DEFAULT_POLICY
) -> CheckedAnswer:
    by_number = {p.number: p for p in passages}
    question_words = frozenset(content_words(question))
    citations = _CitationList()
    checked: list[CheckedSentence] = []
    rewritten: list[str] = []
    dropped = 0
    for start, end in split_sentences(answer):
        sentence = answer[start:end]
        plain = strip_markers(sentence)
        claim = claim_of(plain, question)
        numbers = cited_numbers(sentence)
        cited = [by_number[n] for n in numbers if n in by_number]
        supporting = [
            (span, passage)
            for passage in cited
            if (span := _support(claim, plain, passage, question_words, policy))[0] >= policy.min_support
        ]
        dropped += len(numbers) - len(supporting)
        if not supporting:
            scored = [(_support(claim, plain, p, question_words, policy), p) for p in passages]
            best = max(scored, key=lambda item: item[0][0], default=None)
            if best is not None and best[0][0] >= policy.min_support:
                supporting = [best]
        kept = sorted({citations.add(p, support, s, e) for (support, s, e), p in supporting})
        checked.append(
            CheckedSentence(
                text=plain,
                citations=tuple(kept),
                supported=bool(kept),
                # Phrases the passages do not hold are the question's words reordered, not a claim.
                claims=not claim.empty and (bool(kept) or bool(claim.words or claim.exact)),
            )
        )
        rewritten.append(_attach(plain, "".join(f"[{i + 1}]" for i in kept)))
    separator = "" if _CJK.search(answer) else " "
    return CheckedAnswer(
        text=separator.join(rewritten).strip(),
        citations=tuple(citations.items),
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
