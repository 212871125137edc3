from __future__ import annotations

from pathlib import Path

import pytest

from app.rag.evaluation import RetrievalScores, first_hit_rank, load_queries


def test_queries_without_gold_are_skipped_and_paths_reduced_to_names(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"id": "a", "question": "q1", "gold_sources": ["dir/x.txt"]}\n\n'
        '{"id": "u", "question": "q2", "gold_sources": [], "type": "unanswerable"}\n',
        encoding="utf-8",
    )
    queries, skipped = load_queries(path)
    assert [(q.id, q.gold_sources) for q in queries] == [("a", frozenset({"x.txt"}))]
    assert skipped == 1


def test_hit_and_reciprocal_rank() -> None:
    scores = RetrievalScores(k=3)
    scores.add(first_hit_rank(["a", "b", "gold"], frozenset({"gold"})))
    scores.add(first_hit_rank(["gold"], frozenset({"gold"})))
    scores.add(first_hit_rank(["a", "b"], frozenset({"gold"})))
    scores.add(4)  # beyond k counts as a miss
    assert first_hit_rank([{"a", "b"}, {"x", "gold"}], frozenset({"gold"})) == 2
    assert scores.hit_at_k == pytest.approx(0.5)
    assert scores.mrr_at_k == pytest.approx((1 / 3 + 1) / 4)
