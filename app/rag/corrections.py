"""The corrections memory's matching: is a new question the one an approved correction answered?

Two tests, because similarity alone cannot tell. A question about a neighbouring fact ("the maximum *download*
size" against the corrected "maximum *upload* size", 加班餐补 against 加班费) embeds closer to the corrected
question than a true rewording does: on ``eval/corrections`` the median cosine (multilingual-e5-small) of
near-misses is 0.96, of paraphrases 0.92. So a question matches when

1. its cosine to the corrected question is at least the language's floor (``thresholds``: below it lie
   questions on other topics; the floors let at most 1% of them through on the pair set), and
2. it does not look like a near-miss: sharing most content words with the corrected question (Jaccard at
   least ``overlap``) while adding one of its own, or negating what the other does not. A rewording seldom
   keeps most words and swaps one; a near-miss nearly always does.

``bench/corrections.py`` measures both on the pair set. A question that repeats the corrected one exactly
(the same characters once case, width, spaces and punctuation are set aside) matches whatever the scores, and
may be answered from the correction directly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.rag.citations import content_words
from app.rag.embedding import Vectors
from app.rag.prompts import detect_language

# Negation in a question about policy ("not reimbursable", 不可以/不需要); plain 不 is too common ("才不会").
_NEGATION = re.compile(
    r"\b(?:not|cannot|never)\b|n't\b|不(?:可以|能|需要|用|要|允许|支持|是|包括|包含)|没有|无需|无法|禁止|不得",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class KnownCorrection:
    """An approved correction as the memory holds it: the question it answers and that question's vector."""

    feedback_id: int
    question: str
    text: str
    vector: Vectors  # the question embedded as a query, unit length
    words: frozenset[str] = field(default=frozenset())  # content words of the question (filled in if empty)

    def __post_init__(self) -> None:
        if not self.words:
            object.__setattr__(self, "words", frozenset(content_words(self.question)))

    @property
    def key(self) -> str:
        return question_key(self.question)


@dataclass(frozen=True)
class MatchPolicy:
    # Cosine floors by the asked question's language (tuned on eval/corrections, see bench/corrections.py).
    thresholds: Mapping[str, float] = field(default_factory=lambda: {"en": 0.86, "zh": 0.89})
    overlap: float = 0.4  # Jaccard of content words at which an added word makes a near-miss

    def floor(self, language: str) -> float:
        return self.thresholds.get(language, max(self.thresholds.values(), default=0.9))


@dataclass(frozen=True)
class CorrectionMatch:
    correction: KnownCorrection
    similarity: float
    exact: bool  # the question repeats the corrected one


def question_key(question: str) -> str:
    """A question reduced to what an exact repeat must share: NFKC, case-folded, without spaces, punctuation
    or symbols ("What is X?" and "what is x" are one question; "What is Y?" is not)."""
    normalized = unicodedata.normalize("NFKC", question).casefold()
    return "".join(ch for ch in normalized if unicodedata.category(ch)[0] not in "PZSC")


def looks_like_near_miss(
    question: str, words: frozenset[str], corrected: str, corrected_words: frozenset[str], *, overlap: float
) -> bool:
    """Most words shared and one added, or a negation only one of them has: a neighbouring fact."""
    union = words | corrected_words
    jaccard = len(words & corrected_words) / len(union) if union else 1.0
    if jaccard < overlap:
        return False
    negation_differs = bool(_NEGATION.search(question)) != bool(_NEGATION.search(corrected))
    return bool(words - corrected_words) or negation_differs


def match_corrections(
    question: str,
    vector: Vectors,
    known: Sequence[KnownCorrection],
    *,
    policy: MatchPolicy,
    limit: int,
) -> list[CorrectionMatch]:
    """The corrections whose question is this one or a rewording of it, closest first (exact repeats lead)."""
    if not known:
        return []
    key = question_key(question)
    floor = policy.floor(detect_language(question))
    words = frozenset(content_words(question))
    similarities = np.stack([c.vector for c in known]) @ vector
    matches = []
    for correction, similarity in zip(known, similarities, strict=True):
        exact = bool(key) and correction.key == key
        close = float(similarity) >= floor and not looks_like_near_miss(
            question, words, correction.question, correction.words, overlap=policy.overlap
        )
        if exact or close:
            matches.append(CorrectionMatch(correction, round(float(similarity), 4), exact))
    matches.sort(key=lambda m: (not m.exact, -m.similarity, m.correction.feedback_id))
    return matches[:limit]
