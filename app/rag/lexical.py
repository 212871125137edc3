"""BM25 over jieba tokens, kept in memory and updated chunk by chunk.

Tokens are computed once at ingestion and stored with each chunk in SQL, so this index is rebuilt from the
store of record without re-tokenizing, and a reader applies only the difference when a collection changes.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable

import jieba

from app.rag.types import ScoredId

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[\w\u3400-\u9fff]", re.UNICODE)

# Function words that carry no topic in either language; dropping them keeps postings short and scores sharp.
STOPWORDS = frozenset(
    [
        "的",
        "了",
        "和",
        "是",
        "在",
        "与",
        "或",
        "及",
        "等",
        "对",
        "为",
        "以",
        "于",
        "把",
        "被",
        "从",
        "中",
        "上",
        "下",
        "个",
        "这",
        "那",
        "其",
        "之",
        "也",
        "都",
        "就",
        "而",
        "并",
        "将",
        "可",
        "可以",
        "如果",
        "则",
        "所",
        "由",
        "一个",
        "一种",
        "时",
        "后",
        "前",
        "会",
        "能",
        "要",
        "没有",
        "不",
        "有",
        "我",
        "你",
        "他",
        "它",
        "我们",
        "你们",
        "他们",
        "它们",
        "该",
        "此",
        "吗",
        "呢",
        "吧",
        "啊",
        "什么",
        "怎么",
        "如何",
        "哪些",
        "哪个",
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "by",
        "with",
        "as",
        "from",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "into",
        "than",
        "then",
        "there",
        "their",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "my",
        "your",
        "our",
        "not",
        "no",
        "yes",
        "if",
        "so",
        "but",
        "about",
    ]
)

_jieba_ready = threading.Lock()
_jieba_initialized = False


def initialize_tokenizer() -> None:
    """Load jieba's dictionary once (about a second) instead of inside the first request."""
    global _jieba_initialized
    with _jieba_ready:
        if not _jieba_initialized:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba_initialized = True


def tokenize(text: str) -> list[str]:
    """Lower-cased search tokens: jieba's search mode adds the sub-words of long Chinese words."""
    initialize_tokenizer()
    tokens = []
    for token in jieba.cut_for_search(text.lower()):
        token = token.strip()
        if token and _WORD.search(token) and token not in STOPWORDS:
            tokens.append(token)
    return tokens


class LexicalIndex:
    """Okapi BM25 with incremental add and remove. Thread-safe."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self._k1 = k1
        self._b = b
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}
        self._terms_of: dict[int, tuple[str, ...]] = {}
        self._total_length = 0
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._lengths)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._lengths)

    def add(self, chunk_id: int, terms: Iterable[str]) -> None:
        counts = Counter(terms)
        with self._lock:
            if chunk_id in self._lengths:
                self.remove(chunk_id)
            for term, tf in counts.items():
                self._postings.setdefault(term, {})[chunk_id] = tf
            length = sum(counts.values())
            self._lengths[chunk_id] = length
            self._terms_of[chunk_id] = tuple(counts)
            self._total_length += length

    def remove(self, chunk_id: int) -> None:
        with self._lock:
            length = self._lengths.pop(chunk_id, None)
            if length is None:
                return
            self._total_length -= length
            for term in self._terms_of.pop(chunk_id):
                postings = self._postings[term]
                del postings[chunk_id]
                if not postings:
                    del self._postings[term]

    def search(self, query_terms: Iterable[str], limit: int) -> list[ScoredId]:
        with self._lock:
            n = len(self._lengths)
            if n == 0:
                return []
            average_length = self._total_length / n
            scores: dict[int, float] = {}
            for term, query_tf in Counter(query_terms).items():
                postings = self._postings.get(term)
                if not postings:
                    continue
                df = len(postings)
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                for chunk_id, tf in postings.items():
                    norm = self._k1 * (1.0 - self._b + self._b * self._lengths[chunk_id] / average_length)
                    gain = query_tf * idf * tf * (self._k1 + 1.0) / (tf + norm)
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + gain
        best = heapq.nlargest(limit, scores.items(), key=lambda item: item[1])
        return [ScoredId(id=chunk_id, score=score) for chunk_id, score in best]
