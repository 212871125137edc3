"""What an answer may rest on: a span of a document, a fact, or a verified correction.

Every kind is numbered the same way in the prompt ([1], [2], ...) and cited the same way by the model; the
citation check then verifies a sentence against whichever kind it cites (see ``app.rag.citations``):

- a **document span** is a retrieved chunk; a quote is cut from its stored text, with offsets in the document;
- a **fact** is a value wenda supplies that no document holds (today's date from the clock, a computed sum, a
  tool's answer); a sentence citing it must contain its value verbatim;
- a **correction** is an approved user correction of an earlier answer; it is checked like a passage, and its
  quote's offsets are into the correction's own text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar


class EvidenceKind(enum.StrEnum):
    DOCUMENT = "document"
    FACT = "fact"
    CORRECTION = "correction"


@dataclass(frozen=True)
class DocumentSpan:
    """A retrieved chunk: ``text == document_text[start:end]`` always holds."""

    kind: ClassVar[EvidenceKind] = EvidenceKind.DOCUMENT

    chunk_id: int
    document_id: int
    source: str
    text: str
    score: float
    start: int
    end: int
    section: str = ""
    aliases: tuple[str, ...] = ()  # other filenames the same bytes were uploaded under
    prior: float = 0.0  # net votes from ratings of answers that cited it (app.rag.priors)
    rank_shift: int = 0  # places those votes moved it (positive: up)

    @property
    def mentionable_text(self) -> str:
        """What the question's named things are looked up in before generation."""
        return f"{self.source} {self.section} {self.text}"


@dataclass(frozen=True)
class Fact:
    """A value from outside the documents: ``source`` says where it came from (``clock``, ``tool:weather``)."""

    kind: ClassVar[EvidenceKind] = EvidenceKind.FACT

    name: str
    value: str
    source: str
    # The question's own words the fact answers for ("3.5万", "12800"): the check that every name the question
    # uses is mentioned somewhere finds them here.
    mentions: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.name}: {self.value}"

    @property
    def mentionable_text(self) -> str:
        return " ".join([self.text, *self.mentions])


@dataclass(frozen=True)
class Correction:
    """An approved correction given as feedback on an earlier answer to a similar question."""

    kind: ClassVar[EvidenceKind] = EvidenceKind.CORRECTION

    feedback_id: int
    text: str
    question: str = ""  # the question it corrected an answer to
    score: float = 0.0  # the new question's similarity to that one
    exact: bool = False  # the new question repeats it: the answer may be the correction itself

    @property
    def mentionable_text(self) -> str:
        return f"{self.question} {self.text}"


Evidence = DocumentSpan | Fact | Correction


def evidence_summary(evidence: Evidence, *, rank: int, packed: bool) -> dict[str, object]:
    """The evidence as the answer record keeps it: ids and scores, not the text (SQL has that)."""
    summary: dict[str, object] = {"kind": evidence.kind.value, "rank": rank, "packed": packed}
    if isinstance(evidence, DocumentSpan):
        summary.update(chunk_id=evidence.chunk_id, document_id=evidence.document_id, score=evidence.score)
        if evidence.rank_shift or evidence.prior:
            summary.update(prior=evidence.prior, rank_shift=evidence.rank_shift)
    elif isinstance(evidence, Fact):
        summary.update(name=evidence.name, value=evidence.value, source=evidence.source)
    else:
        summary.update(feedback_id=evidence.feedback_id, score=evidence.score, exact=evidence.exact)
    return summary
