from __future__ import annotations

import pytest

from app.rag.lexical import LexicalIndex, tokenize
from app.rag.retrieval import reciprocal_rank_fusion
from app.rag.types import ScoredId


def test_tokenize_segments_chinese_and_drops_function_words() -> None:
    tokens = tokenize("改变文件的所有者和组")
    assert "文件" in tokens and "所有者" in tokens
    assert "的" not in tokens and "和" not in tokens
    assert tokenize("The Git INDEX file") == ["git", "index", "file"]


def test_bm25_ranks_the_matching_chunk_first_and_forgets_removed_ones() -> None:
    index = LexicalIndex()
    texts = {1: "修改文件权限 chmod", 2: "改变文件所有者 chown", 3: "显示磁盘空间 df", 4: "网络接口配置"}
    for chunk_id, text in texts.items():
        index.add(chunk_id, tokenize(text))
    assert index.search(tokenize("怎样改变所有者"), 2)[0].id == 2
    index.remove(2)
    assert all(hit.id != 2 for hit in index.search(tokenize("改变所有者"), 4))
    assert len(index) == 3


def test_bm25_re_adding_a_chunk_replaces_it() -> None:
    index = LexicalIndex()
    index.add(1, ["alpha"])
    index.add(1, ["beta"])
    assert index.search(["alpha"], 5) == []
    assert [h.id for h in index.search(["beta"], 5)] == [1]


def test_rare_terms_weigh_more_than_common_ones() -> None:
    index = LexicalIndex()
    for chunk_id in range(1, 11):
        index.add(chunk_id, ["common"] + (["rare"] if chunk_id == 7 else []))
    assert index.search(["common", "rare"], 1)[0].id == 7


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    dense = [ScoredId(1, 0.9), ScoredId(2, 0.8), ScoredId(3, 0.7)]
    lexical = [ScoredId(2, 12.0), ScoredId(4, 10.0), ScoredId(5, 1.0)]
    fused = reciprocal_rank_fusion([dense, lexical], k=60, limit=3)
    # 2 is second and first; 1 is first in one ranking only.
    assert [hit.id for hit in fused] == [2, 1, 4]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_fill_by_document_takes_each_documents_best_first_then_goes_deeper() -> None:
    from app.rag.retrieval import fill_by_document

    document_of = {1: 10, 2: 10, 3: 10, 4: 20, 5: 30}
    chunks = [ScoredId(1, 0.9), ScoredId(2, 0.8), ScoredId(4, 0.7), ScoredId(3, 0.6), ScoredId(5, 0.5)]
    documents = [ScoredId(20, 1.0), ScoredId(10, 0.9), ScoredId(30, 0.1)]
    assert [
        h.id for h in fill_by_document(chunks, documents, document_of, limit=4, max_per_document=None)
    ] == [
        4,
        1,
        5,
        2,
    ]
    # One document only: its chunks in chunk order, as many as asked for.
    single = fill_by_document(chunks[:2], [ScoredId(10, 1.0)], document_of, limit=5, max_per_document=None)
    assert [h.id for h in single] == [1, 2]
    capped = fill_by_document(chunks, documents, document_of, limit=5, max_per_document=1)
    assert [h.id for h in capped] == [4, 1, 5]
