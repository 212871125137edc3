"""Ranking from ratings: passages behind up-voted answers rise, passages behind down-voted ones sink, within
bounds.

Each rating of an answer is a vote for (up) or against (down) every chunk the answer cited, weighed by its age
(halved every ``half_life_days``). A chunk's net vote moves it ``round(max_shift · tanh(net / saturation))``
places in the fused ranking: one vote moves a chunk one place, each further place needs several more, and
no number of votes moves a chunk more than ``max_shift`` places by itself, so a few votes cannot bury a
passage nor lift one past better matches from deep in the ranking. When answers list documents first
(``/v1/retrieve``), a document moves by the sum of its chunks' votes, under the same bound. The shift is
applied after fusion, to ranks rather than to scores: reciprocal-rank scores lie so close together that a small factor on them would
move a chunk anywhere from zero to dozens of places.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from app.rag.types import ScoredId


@dataclass(frozen=True)
class PriorPolicy:
    max_shift: int = 3
    saturation: float = 3.0
    half_life_days: float = 30.0

    def shift(self, net_votes: float) -> int:
        if self.max_shift <= 0 or not net_votes:
            return 0
        return round(self.max_shift * math.tanh(net_votes / self.saturation))


@dataclass(frozen=True)
class Vote:
    rating: str  # up | down
    chunk_ids: Sequence[int]
    at: datetime


def net_votes(votes: Iterable[Vote], *, now: datetime, half_life_days: float) -> dict[int, float]:
    """Each chunk's votes, up minus down, each weighed by 0.5 ** (age / half-life)."""
    net: dict[int, float] = {}
    for vote in votes:
        age_days = max((now - vote.at).total_seconds(), 0.0) / 86_400
        weight = 0.5 ** (age_days / half_life_days) if half_life_days > 0 else 1.0
        sign = 1.0 if vote.rating == "up" else -1.0
        for chunk_id in set(vote.chunk_ids):
            net[chunk_id] = net.get(chunk_id, 0.0) + sign * weight
    return {chunk_id: value for chunk_id, value in net.items() if abs(value) > 1e-9}


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
