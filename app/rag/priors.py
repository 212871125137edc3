"""Ranking from ratings: passages behind up-voted answers rise, passages behind down-voted ones sink, for the
questions those answers were to, within bounds.

Each rating of an answer is a vote for (up) or against (down) every chunk the answer cited, weighed by its age
(halved every ``half_life_days``) and by how close the new question is to the question the rated answer was to
(cosine of their embeddings: no weight below ``similarity_floor``, full weight from ``similarity_full``). A vote
is evidence about a passage *for a question*. A first version counted every vote for every question: up-voted
passages then climbed over the right ones for unrelated questions (on the dev known-item set, MRR@5 of the
questions nobody voted on fell from 0.805 to 0.690 after one simulated round of votes, 0.559 after two), and
a floor of 0.88 still let 98% of unrelated questions through (0.722); with 0.95 they stay at 0.802-0.805 while
the voted questions go from 0.781 to 0.851 (``bench/ratings.py``). A chunk's net vote moves it
``round(max_shift · tanh(net / saturation))`` places in the fused ranking: with the defaults one vote moves it
one place, three votes two, eight three, and no number of votes moves a chunk more than ``max_shift`` places
by itself, so a few votes cannot bury a passage nor lift one past better matches from deep in the ranking.
When results list documents first (``/v1/retrieve``), a document moves by the sum of its chunks' votes, under
the same bound. The shift is applied after fusion, to ranks rather than to scores: reciprocal-rank scores lie
so close together that a small factor on them would move a chunk anywhere from zero to dozens of places.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from app.rag.embedding import Vectors
from app.rag.types import ScoredId


@dataclass(frozen=True)
class PriorPolicy:
    max_shift: int = 3
    saturation: float = 5.0
    half_life_days: float = 30.0
    # How close a new question must be to a voted one for the vote to count (linear between the two).
    similarity_floor: float = 0.95
    similarity_full: float = 0.99

    def weight(self, similarity: Vectors) -> Vectors:
        span = max(self.similarity_full - self.similarity_floor, 1e-6)
        weights: Vectors = np.clip((similarity - self.similarity_floor) / span, 0.0, 1.0).astype(np.float32)
        return weights

    def shift(self, net_votes: float) -> int:
        if self.max_shift <= 0 or not net_votes:
            return 0
        return round(self.max_shift * math.tanh(net_votes / self.saturation))


@dataclass(frozen=True)
class Vote:
    rating: str  # up | down
    chunk_ids: Sequence[int]
    at: datetime
    question: Vectors | None = field(default=None, compare=False)  # the rated answer's question, embedded


class VoteSet:
    """A collection's votes, aged once, weighed against each new question."""

    def __init__(self, votes: Sequence[Vote], *, now: datetime, half_life_days: float) -> None:
        kept = [v for v in votes if v.question is not None and v.chunk_ids]
        self._chunks = [tuple(set(v.chunk_ids)) for v in kept]
        self._signed = np.array(
            [_age_weight(v.at, now, half_life_days) * (1.0 if v.rating == "up" else -1.0) for v in kept],
            dtype=np.float32,
        )
        self._questions = np.stack([v.question for v in kept if v.question is not None]) if kept else None

    def __len__(self) -> int:
        return len(self._chunks)

    def net_for(self, question: Vectors, policy: PriorPolicy) -> dict[int, float]:
        """Each chunk's net vote for this question: the votes of similar questions, weighed by similarity."""
        if self._questions is None:
            return {}
        weights = policy.weight(self._questions @ question) * self._signed
        net: dict[int, float] = {}
        for index in np.flatnonzero(weights):
            for chunk_id in self._chunks[index]:
                net[chunk_id] = net.get(chunk_id, 0.0) + float(weights[index])
        return {chunk_id: value for chunk_id, value in net.items() if abs(value) > 1e-9}


def _age_weight(at: datetime, now: datetime, half_life_days: float) -> float:
    age_days = max((now - at).total_seconds(), 0.0) / 86_400
    return 0.5 ** (age_days / half_life_days) if half_life_days > 0 else 1.0


def apply_priors(ranking: Sequence[ScoredId], priors: Mapping[int, float], policy: PriorPolicy) -> list[ScoredId]:
    """The ranking with each chunk moved by its votes; every hit keeps its fused score and carries its net
    vote (``prior``) and the places it was moved (``shift``, positive: up)."""
    if not priors:
        return list(ranking)
    keyed = []
    for position, hit in enumerate(ranking):
        prior = priors.get(hit.id, 0.0)
        shift = policy.shift(prior)
        # At equal targets the moved chunk goes first: it takes the place, the other steps aside.
        keyed.append((position - shift, -shift, position, replace(hit, prior=round(prior, 4), shift=shift)))
    keyed.sort(key=lambda item: item[:3])
    return [item[3] for item in keyed]
