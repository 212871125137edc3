"""Ranking from ratings (app.rag.priors) and the corrections memory's matching (app.rag.corrections): the bounds
a few votes cannot pass, the decay, and which questions a correction answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.rag.corrections import KnownCorrection, MatchPolicy, match_corrections, question_key
from app.rag.priors import PriorPolicy, Vote, VoteSet, apply_priors
from app.rag.types import ScoredId
from tests.fakes import FakeEmbedder

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _ranking(n: int) -> list[ScoredId]:
    return [ScoredId(id=i, score=1.0 / (60 + i)) for i in range(n)]


@pytest.mark.parametrize(("votes", "shift"), [(0, 0), (1, 1), (2, 2), (3, 2), (5, 3), (1000, 3), (-1, -1), (-1000, -3)])
def test_votes_move_a_passage_a_bounded_number_of_places(votes: float, shift: int) -> None:
    assert PriorPolicy(max_shift=3, saturation=3.0).shift(votes) == shift


def test_no_number_of_votes_moves_a_passage_further_than_the_bound() -> None:
    policy = PriorPolicy(max_shift=3)
    buried = apply_priors(_ranking(10), {0: -1e6}, policy)
    assert [hit.id for hit in buried][:4] == [1, 2, 3, 0]
    assert buried[3].shift == -3 and buried[3].prior == -1e6
    lifted = apply_priors(_ranking(10), {9: 1e6}, policy)
    assert [hit.id for hit in lifted].index(9) == 6
    # Scores are kept: the move is in rank only, and the rest keep their order.
    assert {hit.id: hit.score for hit in lifted} == {hit.id: hit.score for hit in _ranking(10)}
    assert [hit.id for hit in lifted if hit.id != 9] == list(range(9))


def test_without_votes_the_ranking_is_unchanged() -> None:
    assert apply_priors(_ranking(5), {}, PriorPolicy()) == _ranking(5)
    off = apply_priors(_ranking(5), {2: 5.0}, PriorPolicy(max_shift=0))
    assert [hit.id for hit in off] == list(range(5)) and off[2].shift == 0 and off[2].prior == 5.0


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_votes_decay_by_half_life_and_count_a_chunk_once_per_answer() -> None:
    question = _unit(1, 0)
    votes = [
        Vote("up", [1, 2, 2], NOW, question),
        Vote("down", [2], NOW - timedelta(days=30), question),
        Vote("up", [3], NOW - timedelta(days=60), question),
        Vote("up", [4], NOW, question),
        Vote("down", [4], NOW, question),
    ]
    net = VoteSet(votes, now=NOW, half_life_days=30).net_for(question, PriorPolicy())
    assert net[1] == pytest.approx(1.0)
    assert net[2] == pytest.approx(0.5)
    assert net[3] == pytest.approx(0.25)
    assert 4 not in net  # an up and a down cancel out


def test_a_vote_counts_as_far_as_the_new_question_is_the_one_voted_on() -> None:
    voted = _unit(1, 0)
    votes = VoteSet([Vote("up", [7], NOW, voted)], now=NOW, half_life_days=30)
    policy = PriorPolicy(similarity_floor=0.88, similarity_full=0.95)
    assert votes.net_for(voted, policy) == {7: pytest.approx(1.0)}
    close = _unit(1, 0.3)  # cosine 0.958
    assert votes.net_for(close, policy) == {7: pytest.approx(1.0)}
    between = _unit(1, 0.45)  # cosine 0.912: part of the weight
    assert 0.3 < votes.net_for(between, policy)[7] < 0.6
    assert votes.net_for(_unit(1, 1), policy) == {}  # cosine 0.71: another question
    assert VoteSet([], now=NOW, half_life_days=30).net_for(voted, policy) == {}


EMBEDDER = FakeEmbedder()


def _known(feedback_id: int, question: str) -> KnownCorrection:
    return KnownCorrection(feedback_id, question, "the fixed answer", EMBEDDER.embed_queries([question])[0])


def _match(question: str, known: list[KnownCorrection], **policy: object) -> list[tuple[int, bool]]:
    vector = EMBEDDER.embed_queries([question])[0]
    found = match_corrections(question, vector, known, policy=MatchPolicy(**policy), limit=2)  # type: ignore[arg-type]
    return [(m.correction.feedback_id, m.exact) for m in found]


def test_an_exact_repeat_matches_whatever_case_width_and_punctuation() -> None:
    assert question_key("What is X?") == question_key("  what IS x ") == question_key("ｗｈａｔ　ｉｓ　ｘ？")
    assert question_key("What is X?") != question_key("What is Y?")
    known = [_known(1, "What is the maximum upload size?")]
    assert _match("what is the MAXIMUM upload size", known) == [(1, True)]


def test_rewordings_match_and_neighbouring_questions_do_not() -> None:
    known = [_known(1, "What is the maximum upload size in the portal?"), _known(2, "公司的 SSO 密码多久要改一次？")]
    assert _match("In the portal, what is the maximum upload size?", known) == [(1, False)]
    # Most words shared, one swapped in: a neighbouring fact.
    assert _match("What is the maximum download size in the portal?", known) == []
    assert _match("公司的 SSO 密码最少要几位？", known) == []
    # A negation only one of them has.
    assert _match("What is not the maximum upload size in the portal?", known) == []
    # Unrelated questions stay under the floor.
    assert _match("Who signs the travel expense reports?", known) == []


def test_the_floor_is_per_language() -> None:
    known = [_known(1, "What is the maximum upload size in the portal?")]
    reworded = "In the portal, what is the maximum upload size?"
    assert _match(reworded, known, thresholds={"en": 1.01}) == []
    assert _match(reworded, known, thresholds={"en": 0.5, "zh": 1.01}) == [(1, False)]


def test_no_corrections_no_matches() -> None:
    assert match_corrections("q", np.zeros(64, dtype=np.float32), [], policy=MatchPolicy(), limit=2) == []
