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


def test_answer_scores() -> None:
    from app.rag.evaluation import AnswerQuestion, AnswerScores

    fact = AnswerQuestion(
        "f", "q", True, ("umask 002", "0002"), frozenset({"a.txt"}), "把umask设置成0002更安全。"
    )
    nope = AnswerQuestion("u", "q", False, (), frozenset(), "")
    scores = AnswerScores()
    scores.add(
        fact,
        answer="设置成 0002 [1]。",
        grounded=True,
        cited=[({"a.txt"}, "把umask设置成0002更安全。")],
        seconds=1.0,
    )
    scores.add(fact, answer="不知道", grounded=False, cited=[], seconds=3.0)
    scores.add(
        fact,
        answer="0002 [1]",
        grounded=True,
        cited=[({"b.txt", "a.txt"}, "无关"), ({"c.txt"}, "x")],
        seconds=2.0,
    )
    scores.add(nope, answer="文档中没有", grounded=False, cited=[], seconds=1.0)
    scores.add(nope, answer="invented", grounded=True, cited=[], seconds=1.0)
    summary = scores.summary()
    assert summary["accuracy"] == pytest.approx(2 / 3, abs=1e-4) and summary["refusal_rate"] == 0.5
    assert summary["citations"] == 3
    assert summary["citation_precision_source"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["citation_precision_gold_text"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["citation_recall_gold_text"] == pytest.approx(1 / 3, abs=1e-4)  # 1 of 3 answers cites it
    assert summary["latency_p50_s"] == 1.0
