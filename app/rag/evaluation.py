"""Retrieval quality measures for ``wenda eval``: hit@k and MRR@k over known-item or QA query files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.rag.errors import InvalidInputError


@dataclass(frozen=True)
class EvalQuery:
    id: str
    question: str
    gold_sources: frozenset[str]


class EvalFileError(InvalidInputError):
    """A query or question file that cannot be read: the message names the file and line."""


def _items(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file with a ``question`` on every line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EvalFileError(f"{path}: {error.strerror or error}") from error
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalFileError(f"{path}:{number}: not a JSON object ({error.msg})") from error
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise EvalFileError(f'{path}:{number}: each line needs a "question" string')
        items.append((number, item))
    return items


def load_queries(path: Path) -> tuple[list[EvalQuery], int]:
    """Queries with gold sources, and how many lines had none (unanswerable QA items: nothing to find)."""
    queries: list[EvalQuery] = []
    skipped = 0
    for number, item in _items(path):
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


@dataclass(frozen=True)
class AnswerQuestion:
    id: str
    question: str
    answerable: bool
    keywords: tuple[str, ...]
    gold_sources: frozenset[str]
    gold_text: str


def load_answer_questions(path: Path) -> list[AnswerQuestion]:
    questions = []
    for number, item in _items(path):
        questions.append(
            AnswerQuestion(
                id=str(item.get("id", number)),
                question=item["question"],
                answerable=item.get("type") != "unanswerable",
                keywords=tuple(item.get("answer_keywords") or ()),
                gold_sources=frozenset(Path(s).name for s in item.get("gold_sources") or ()),
                gold_text=item.get("gold_text") or "",
            )
        )
    return questions


def _squash(text: str) -> str:
    return "".join(text.split())


@dataclass
class AnswerScores:
    """Accuracy on answerable questions, refusals on unanswerable ones, and how precise the citations are."""

    answered: int = 0
    correct: int = 0
    unanswerable: int = 0
    refused: int = 0
    citations: int = 0
    citations_in_gold_source: int = 0
    citations_on_gold_text: int = 0
    gold_text_questions: int = 0
    gold_text_cited: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(
        self,
        question: AnswerQuestion,
        *,
        answer: str,
        grounded: bool,
        cited: Sequence[tuple[set[str], str]],
        seconds: float,
    ) -> None:
        """``cited`` holds, per citation, the names of its file (source and aliases) and its quote."""
        self.latencies.append(seconds)
        if not question.answerable:
            self.unanswerable += 1
            self.refused += not grounded
            return
        self.answered += 1
        lowered = answer.lower()
        self.correct += grounded and any(k.lower() in lowered for k in question.keywords)
        gold = _squash(question.gold_text)
        on_gold = 0
        for names, quote in cited:
            self.citations += 1
            self.citations_in_gold_source += bool(names & question.gold_sources)
            squashed = _squash(quote)
            on_gold += bool(gold) and (squashed in gold or gold in squashed)
        self.citations_on_gold_text += on_gold
        if gold:
            self.gold_text_questions += 1
            self.gold_text_cited += on_gold > 0

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.latencies)

        def share(part: int, whole: int) -> float:
            return round(part / whole, 4) if whole else 0.0

        return {
            "answerable": self.answered,
            "accuracy": share(self.correct, self.answered),
            "unanswerable": self.unanswerable,
            "refusal_rate": share(self.refused, self.unanswerable),
            "citations": self.citations,
            "citation_precision_source": share(self.citations_in_gold_source, self.citations),
            "citation_precision_gold_text": share(self.citations_on_gold_text, self.citations),
            # Of the answerable questions with a gold passage, how many answers cite it.
            "citation_recall_gold_text": share(self.gold_text_cited, self.gold_text_questions),
            "latency_p50_s": round(ordered[len(ordered) // 2], 2) if ordered else 0.0,
            "latency_max_s": round(ordered[-1], 2) if ordered else 0.0,
        }
