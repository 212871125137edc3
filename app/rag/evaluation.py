"""Retrieval quality measures for ``wenda eval``: hit@k and MRR@k over known-item or QA query files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalQuery:
    id: str
    question: str
    gold_sources: frozenset[str]


def load_queries(path: Path) -> tuple[list[EvalQuery], int]:
    """Queries with gold sources, and how many lines had none (unanswerable QA items: nothing to find)."""
    queries: list[EvalQuery] = []
    skipped = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        gold = frozenset(Path(source).name for source in item.get("gold_sources") or ())
        if not gold:
            skipped += 1
            continue
        queries.append(
            EvalQuery(id=str(item.get("id", number)), question=item["question"], gold_sources=gold)
        )
    return queries, skipped


def first_hit_rank(sources: Sequence[str | set[str]], gold: frozenset[str]) -> int | None:
    """1-based rank of the first result whose source (or one of its names) is a gold one."""
    for rank, names in enumerate(sources, start=1):
        if (names in gold) if isinstance(names, str) else bool(names & gold):
            return rank
    return None


@dataclass
class RetrievalScores:
    k: int
    ranks: list[int | None] = field(default_factory=list)

    def add(self, rank: int | None) -> None:
        self.ranks.append(rank if rank is not None and rank <= self.k else None)

    @property
    def hit_at_k(self) -> float:
        return sum(rank is not None for rank in self.ranks) / max(len(self.ranks), 1)

    @property
    def mrr_at_k(self) -> float:
        return sum(1.0 / rank for rank in self.ranks if rank is not None) / max(len(self.ranks), 1)
