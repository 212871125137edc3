"""When wenda says "the documents do not say" instead of answering: the thresholds, in one place, and the
machine-readable reason a refusal carries.

The defaults are the values the dev evals were measured with (see README, "How wenda decides to refuse");
``RefusalSettings`` in ``app.config`` exposes each of them as a setting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RefusalReason(enum.StrEnum):
    NO_PASSAGES = "no_passages"  # retrieval found nothing
    NO_ROOM = "no_context_room"  # passages were found, but none fits the model's window with max_tokens
    UNMENTIONED_NAME = "unmentioned_name"  # the question names something no passage mentions (before generation)
    MODEL_REFUSED = "model_refused"  # the model gave the refusal, or nothing
    UNSUPPORTED = "unsupported"  # the citation check does not find the answer in the evidence

    @property
    def before_generation(self) -> bool:
        """Decided before the model is called: it was not asked."""
        return self in (RefusalReason.NO_PASSAGES, RefusalReason.NO_ROOM, RefusalReason.UNMENTIONED_NAME)


@dataclass(frozen=True)
class RefusalPolicy:
    min_support: float = 0.5
    """Share of a sentence's claim words the quoted span must hold for the sentence to be supported."""
    min_claim_words: int = 2
    """A claim without exact tokens (numbers, paths, options) needs this many words to be checkable at all."""
    span_sentences: int = 2
    """A quote is one sentence (or table row) of a passage, or up to this many neighbouring ones."""
    min_supported_share: float = 0.5
    """Below this share of supported sentences an answer is not grounded."""
    require_supported_first_claim: bool = True
    """The first sentence that claims anything must be supported: a small model that cannot answer tends to
    copy passage text after a wrong first sentence, which per-sentence support alone would pass."""
    refuse_unmentioned_names: bool = True
    """Refuse before generation when the question names something no packed evidence mentions."""


@dataclass(frozen=True)
class Refusal:
    reason: RefusalReason
    detail: str  # for people: what was missing
