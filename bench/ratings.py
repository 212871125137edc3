"""Ranking from ratings, simulated: what one or two rounds of up/down votes do to hit@k and MRR@k.

For a dev set (a corpus and a query file with ``question`` and ``gold_sources``; questions without gold
sources, such as unanswerable ones, are skipped), it

1. ingests the corpus into a data directory (SQLite, the real default settings and embedder, through
   ``app.services.documents.upload`` and the worker, in this process). By default that is a fresh temporary
   directory, removed at the end; ``--data-dir`` keeps it, and a later run with the same ``--data-dir``
   uploads only what is missing (same bytes are recognised as duplicates), which skips the minutes of
   ingestion on reruns;
2. measures the baseline: every query through ``app.services.retrieval.search_collection`` with ``top_k=k``,
   in both modes: ``retrieve`` (``diversify=True``, as ``/v1/retrieve`` does) and ``answer`` (plain chunk
   order, ``diversify=False``, the passages an answer is written from); a hit is a result whose document's
   filename (or one of its aliases) is a gold source, as ``wenda eval retrieval`` counts;
3. splits the queries, with a seeded shuffle, into a *voted* half and a *held-out* half, and simulates users
   on the voted half. Each voted query is asked once per round along the answer path (``diversify=False``,
   ``top_k = retrieval.answer_top_k``, 3 by default, with the votes of earlier rounds in force), and the
   simulated answer cites exactly one chunk, the first:

   * user A rates that answer: **up** if the cited chunk's document is gold, **down** otherwise;
   * only when A voted down and a chunk of a gold document is among the other answer passages (ranks 2 to
     ``answer_top_k``), a second user B, whose answer cited that (first such) gold chunk, rates it **up**.
     When the first chunk is gold, no second vote is cast; when no gold chunk is in the passages, only A's
     down vote is.

   Each vote is one ``Feedback`` row written directly in SQL (status ``rating``, ``chunk_ids=[that chunk]``,
   the collection and tenant, the question and its vector as the feedback service stores it, a unique
   ``query_id`` starting ``bench-ratings:``, created now, so the age decay leaves it at full weight); then
   the collection's ``feedback_version`` is bumped in the same transaction, so ``RatingPriors`` reloads,
   exactly as a rating posted through the API does;
4. measures again after each round (votes accumulate over ``--rounds``, 2 by default): both modes, on the
   voted half, the held-out half (queries nobody voted on: do votes on other questions hurt or help them?)
   and overall, with how many queries' first gold rank rose or fell against the baseline. It also reports
   how many chunks (and documents) carry votes and the places their net votes would move them if every vote
   counted for every question (the most the policy allows); what actually moved, result by result against
   the baseline's lists (documents in ``retrieve`` mode, chunks in ``answer`` mode), with the shifts the
   retriever reported on the returned chunks; and how close each held-out question is to its nearest voted
   one (cosine of the query embeddings), overall and for those whose gold fell, against the policy's
   similarity marks where it has them.

The voted half is asked again in the very words it was voted in, so its figures are the best case for a
ranking that weighs votes by question similarity; the dev sets hold no rewordings to measure how far a vote
carries to the same question asked differently. Settings come from the environment as in production
(``WENDA_FEEDBACK__...``), so a policy can be tried without editing code; the line ``policy:`` says which
was in force.

The bench's own feedback rows are deleted before it starts and when it ends, so a kept data directory comes
back as it was; feedback of the collection from elsewhere would be in force during the baseline, and a
warning says so.

Run from the repository root::

    python bench/ratings.py                                      # manzh: 355 Chinese man pages, 355 queries
    python bench/ratings.py --data-dir /tmp/wenda-ratings        # keep the ingested data for reruns
    python bench/ratings.py --set /work/shared/eval/dev/answers-en --rounds 3
    python bench/ratings.py --max-rank-shift 0                   # control: votes written, ranking ignores them
    python bench/ratings.py --show-changes                       # list each query whose gold rank moved

Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/ratings.py` puts bench/ first on sys.path, where bench/ingest.py would shadow the `ingest`
# package; the repository root must come before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select

from app.cli import SUPPORTED_SUFFIXES
from app.components import Components, build_components
from app.config import Settings
from app.db import feedback as db_feedback
from app.db.models import Chunk, Document, Feedback, Job
from app.db.statuses import FeedbackStatus
from app.rag.evaluation import EvalQuery, RetrievalScores, first_hit_rank, load_queries
from app.rag.evidence import DocumentSpan
from app.rag.priors import PriorPolicy
from app.services import documents, retrieval
from app.services.ratings import prior_policy

DEFAULT_SET = Path("/work/shared/eval/dev/manzh")
QUERY_ID_PREFIX = "bench-ratings:"
# Mode name → diversify, as search_collection takes it.
MODES = {"retrieve": True, "answer": False}
SUBSETS = ("voted", "held_out", "all")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Simulated rounds of up/down votes on answers, and hit@k / MRR@k before and after them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--set",
        type=Path,
        default=DEFAULT_SET,
        help="dev set directory: corpus/ and queries.jsonl or questions.jsonl (e.g. .../answers-en, .../answers-zh)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory to ingest into and keep; a rerun with the same directory reuses the ingested "
        "collection (only missing files are uploaded), saving the minutes of ingestion. Default: a fresh "
        "temporary directory, removed at the end",
    )
    parser.add_argument(
        "--collection", default=None, help="collection name (default: the set's directory name)"
    )
    parser.add_argument("--k", type=int, default=5, help="cut-off of hit@k and MRR@k (top_k of both modes)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of votes; votes accumulate")
    parser.add_argument("--seed", type=int, default=20260301, help="seed of the voted / held-out split")
    parser.add_argument(
        "--voted-share", type=float, default=0.5, help="share of the queries that get voted on"
    )
    parser.add_argument(
        "--max-rank-shift",
        type=int,
        default=None,
        help="override feedback.max_rank_shift (default: the setting, 3); 0 is a control run",
    )
    parser.add_argument(
        "--show-changes", action="store_true", help="list the queries whose first gold rank moved, per stage"
    )
    return parser


@contextmanager
def data_directory(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="wenda-bench-ratings-") as directory:
        yield Path(directory)


def query_file(dev_set: Path) -> Path:
    for name in ("queries.jsonl", "questions.jsonl"):
        if (dev_set / name).is_file():
            return dev_set / name
    raise SystemExit(f"bench/ratings.py: no queries.jsonl or questions.jsonl in {dev_set}")


@dataclass
class IngestReport:
    files: int
    uploaded: int  # files that were not already in the collection
    documents: int
    chunks: int
    seconds: float
    failed: list[str]


def ingest(components: Components, corpus: Path, collection: str) -> IngestReport:
    """Upload every supported file under ``corpus`` (those already there are duplicates, skipped) and run the
    worker in this process until the queue is empty."""
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise SystemExit(f"bench/ratings.py: no documents in {corpus}")
    tenant_id = components.default_tenant_id
    began = time.perf_counter()
    uploaded = 0
    for path in files:
        outcome = documents.upload(
            components,
            tenant_id=tenant_id,
            collection=collection,
            filename=path.name,
            data=path.read_bytes(),
            metadata={"path": str(path)},
        )
        uploaded += not outcome.duplicate
    while components.worker.run_once():
        pass
    seconds = time.perf_counter() - began
    with components.session_factory() as session:
        failed = [f"{job.id}: {job.error}" for job in session.scalars(select(Job)) if job.status == "failed"]
        count, chunks = session.execute(
            select(func.count(Document.id), func.coalesce(func.sum(Document.chunk_count), 0)).where(
                Document.status == "ready"
            )
        ).one()
    return IngestReport(
        files=len(files),
        uploaded=uploaded,
        documents=int(count),
        chunks=int(chunks),
        seconds=seconds,
        failed=failed,
    )


def is_gold(span: DocumentSpan, query: EvalQuery) -> bool:
    return bool({span.source, *span.aliases} & query.gold_sources)


@dataclass
class Pass:
    """One evaluation of every query in one mode: the first gold rank (None: not in the top k), what came back
    in order (chunk ids; for ``retrieve``, document ids in order of first appearance, as a reader sees them),
    and the rank shifts the retriever reported on the returned chunks."""

    ranks: dict[str, int | None] = field(default_factory=dict)
    orders: dict[str, list[int]] = field(default_factory=dict)
    chunk_shifts: Counter[int] = field(default_factory=Counter)


def search(
    components: Components, collection: retrieval.CollectionRef, query: str, *, top_k: int, diversify: bool
) -> list[DocumentSpan]:
    return retrieval.search_collection(
        components,
        tenant_id=components.default_tenant_id,
        collection=collection,
        query=query,
        top_k=top_k,
        diversify=diversify,
    )


def evaluate(
    components: Components, collection: retrieval.CollectionRef, queries: Sequence[EvalQuery], *, k: int
) -> dict[str, Pass]:
    passes = {}
    for mode, diversify in MODES.items():
        result = Pass()
        for query in queries:
            spans = search(components, collection, query.question, top_k=k, diversify=diversify)
            result.ranks[query.id] = first_hit_rank(
                [{s.source, *s.aliases} for s in spans], query.gold_sources
            )
            items = [s.document_id for s in spans] if diversify else [s.chunk_id for s in spans]
            result.orders[query.id] = list(dict.fromkeys(items))
            result.chunk_shifts.update(s.rank_shift for s in spans if s.rank_shift)
        passes[mode] = result
    return passes


def displacement(before: Pass, after: Pass) -> dict[str, Any]:
    """Against the baseline, query by query: how many results lists changed, the places each result that
    was in both lists moved (positive: up), and how many results are new to the top k."""
    moves: Counter[int] = Counter()
    reordered = entered = 0
    for query_id, order in after.orders.items():
        was = {item: position for position, item in enumerate(before.orders[query_id])}
        reordered += order != before.orders[query_id]
        for position, item in enumerate(order):
            if item not in was:
                entered += 1
            elif was[item] != position:
                moves[was[item] - position] += 1
    return {"queries_reordered": reordered, "moved": dict(sorted(moves.items())), "new_in_top_k": entered}


def nearness(
    similarity: npt.NDArray[np.float32],
    policy: dict[str, Any],
    held_out_ids: Sequence[str],
    raw: dict[str, dict[str, Pass]],
) -> dict[str, Any]:
    """How close each held-out question is to its nearest voted one (cosine of their query embeddings), as
    percentiles and as the shares at or above the policy's similarity floor and full-weight mark where it
    has them; and that closeness for the held-out questions whose gold fell in the last stage, per mode."""
    nearest = dict(zip(held_out_ids, similarity.max(axis=1).tolist(), strict=True))

    def percentiles(values: Sequence[float]) -> dict[str, float]:
        if not values:
            return {}
        return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (10, 50, 90)}

    result: dict[str, Any] = {"nearest_voted": percentiles(list(nearest.values()))}
    for mark in ("similarity_floor", "similarity_full"):
        if mark in policy:
            result[f"share_at_or_above_{mark}"] = round(
                sum(v >= policy[mark] for v in nearest.values()) / max(len(nearest), 1), 3
            )
    last = list(raw)[-1]
    for mode in MODES:
        before, after = raw["baseline"][mode].ranks, raw[last][mode].ranks
        far = 10**6
        fell = [q for q in held_out_ids if (after[q] or far) > (before[q] or far)]
        result[f"fell_{mode}"] = {
            "queries": len(fell),
            "nearest_voted": percentiles([nearest[q] for q in fell]),
        }
    return result


@dataclass
class VoteRound:
    number: int
    up_first: int = 0  # A: the cited first chunk was gold
    down_first: int = 0  # A: it was not
    up_second: int = 0  # B: a gold chunk further down the answer passages
    no_gold_in_passages: int = 0  # A voted down and B had nothing to cite
    empty: int = 0  # no passages at all
    seconds: float = 0.0

    @property
    def votes(self) -> int:
        return self.up_first + self.down_first + self.up_second


def cast_votes(
    components: Components,
    collection: retrieval.CollectionRef,
    voted: Sequence[tuple[int, EvalQuery]],
    *,
    vectors: dict[int, bytes],
    number: int,
    answer_top_k: int,
) -> VoteRound:
    """One round of simulated ratings on the voted queries (see the module docstring), written in one
    transaction with the feedback_version bump."""
    began = time.perf_counter()
    round_ = VoteRound(number=number)
    rows: list[Feedback] = []

    def vote(index: int, query: EvalQuery, rating: str, chunk_id: int) -> None:
        rows.append(
            Feedback(
                tenant_id=components.default_tenant_id,
                collection_id=collection.id,
                query_id=f"{QUERY_ID_PREFIX}r{number}:q{index}:{len(rows)}",
                rating=rating,
                status=FeedbackStatus.RATING.value,
                question=query.question,
                chunk_ids=[chunk_id],
                question_vector=vectors[index],
                embedding_model=components.embedder.name,
            )
        )

    for index, query in voted:
        spans = search(components, collection, query.question, top_k=answer_top_k, diversify=False)
        if not spans:
            round_.empty += 1
            continue
        first = spans[0]
        if is_gold(first, query):
            round_.up_first += 1
            vote(index, query, "up", first.chunk_id)
            continue
        round_.down_first += 1
        vote(index, query, "down", first.chunk_id)
        gold = next((span for span in spans[1:] if is_gold(span, query)), None)
        if gold is None:
            round_.no_gold_in_passages += 1
        else:
            round_.up_second += 1
            vote(index, query, "up", gold.chunk_id)
    with components.session_factory() as session:
        session.add_all(rows)
        db_feedback.bump_feedback_version(session, collection_id=collection.id)
        session.commit()
    round_.seconds = time.perf_counter() - began
    return round_


def clear_bench_votes(components: Components, collection_id: int) -> int:
    """Delete this bench's feedback rows of the collection; how many other live ones it holds."""
    with components.session_factory() as session:
        session.execute(
            delete(Feedback).where(
                Feedback.collection_id == collection_id, Feedback.query_id.startswith(QUERY_ID_PREFIX)
            )
        )
        db_feedback.bump_feedback_version(session, collection_id=collection_id)
        session.commit()
        others = session.scalar(
            select(func.count(Feedback.id)).where(
                Feedback.collection_id == collection_id, Feedback.status != FeedbackStatus.WITHDRAWN.value
            )
        )
    return int(others or 0)


@dataclass
class VoteSpread:
    """The live votes of the collection, read from SQL, and the places the policy's shift of each chunk's
    (and each document's) net votes would move it if every vote counted for every question: the most the
    ranking can move them, whatever it weighs votes by."""

    votes: int
    chunks: int
    chunks_up: int  # net votes > 0
    chunks_down: int
    documents: int
    chunk_shift: dict[int, int]  # shift → chunks
    document_shift: dict[int, int]  # shift (by the sum of its chunks' votes) → documents


def vote_spread(components: Components, collection_id: int, policy: PriorPolicy) -> VoteSpread:
    """Unweighed by age: the bench's votes are minutes old."""
    net: dict[int, float] = {}
    with components.session_factory() as session:
        rows = session.execute(
            select(Feedback.rating, Feedback.chunk_ids).where(
                Feedback.collection_id == collection_id, Feedback.status != FeedbackStatus.WITHDRAWN.value
            )
        ).all()
        for rating, chunk_ids in rows:
            for chunk_id in set(chunk_ids or ()):
                net[chunk_id] = net.get(chunk_id, 0.0) + (1.0 if rating == "up" else -1.0)
        net = {chunk_id: votes for chunk_id, votes in net.items() if votes}
        document_of = {
            chunk_id: document_id
            for chunk_id, document_id in session.execute(
                select(Chunk.id, Chunk.document_id).where(Chunk.id.in_(list(net)))
            )
        }
    document_votes: dict[int, float] = {}
    for chunk_id, votes in net.items():
        if chunk_id in document_of:
            document_votes[document_of[chunk_id]] = document_votes.get(document_of[chunk_id], 0.0) + votes
    return VoteSpread(
        votes=len(rows),
        chunks=len(net),
        chunks_up=sum(v > 0 for v in net.values()),
        chunks_down=sum(v < 0 for v in net.values()),
        documents=len(document_votes),
        chunk_shift=dict(sorted(Counter(policy.shift(v) for v in net.values()).items())),
        document_shift=dict(sorted(Counter(policy.shift(v) for v in document_votes.values()).items())),
    )


def scores_of(ranks: dict[str, int | None], ids: Sequence[str], k: int) -> RetrievalScores:
    scores = RetrievalScores(k=k)
    for query_id in ids:
        scores.add(ranks[query_id])
    return scores


def movement(
    before: dict[str, int | None], after: dict[str, int | None], ids: Sequence[str], k: int
) -> dict[str, int]:
    """How many queries' first gold rank rose (better), fell (worse), entered or left the top k."""
    far = k + 1
    better = worse = entered = left = 0
    for query_id in ids:
        old, new = before[query_id] or far, after[query_id] or far
        better += new < old
        worse += new > old
        entered += old == far and new < far
        left += old < far and new == far
    return {"better": better, "worse": worse, "entered": entered, "left": left}


def summarise(
    passes: dict[str, Pass],
    baseline: dict[str, Pass],
    subsets: dict[str, list[str]],
    k: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for mode, current in passes.items():
        per_subset = {}
        for subset, ids in subsets.items():
            scores = scores_of(current.ranks, ids, k)
            per_subset[subset] = {
                "queries": len(ids),
                f"hit_at_{k}": round(scores.hit_at_k, 4),
                f"mrr_at_{k}": round(scores.mrr_at_k, 4),
                **movement(baseline[mode].ranks, current.ranks, ids, k),
            }
        result[mode] = {
            "subsets": per_subset,
            **displacement(baseline[mode], current),
            "chunk_shifts_reported": dict(sorted(current.chunk_shifts.items())),
        }
    return result


def print_table(stages: dict[str, dict[str, Any]], k: int) -> None:
    base = stages["baseline"]
    header = f"\n{'stage':<10}{'mode':<10}{'subset':<10}{'n':>5}{'hit@' + str(k):>8}{'MRR@' + str(k):>8}"
    print(header + f"{'Δhit':>8}{'ΔMRR':>8}{'better':>8}{'worse':>7}{'in':>5}{'out':>5}")
    for mode in MODES:
        for subset in SUBSETS:
            for stage, result in stages.items():
                row = result[mode]["subsets"][subset]
                was = base[mode]["subsets"][subset]
                hit, mrr = row[f"hit_at_{k}"], row[f"mrr_at_{k}"]
                line = f"{stage:<10}{mode:<10}{subset:<10}{row['queries']:>5}{hit:>8.3f}{mrr:>8.3f}"
                if stage != "baseline":
                    line += f"{hit - was[f'hit_at_{k}']:>+8.3f}{mrr - was[f'mrr_at_{k}']:>+8.3f}"
                    line += f"{row['better']:>8}{row['worse']:>7}{row['entered']:>5}{row['left']:>5}"
                print(line)
        print()


def print_changes(raw: dict[str, dict[str, Pass]], queries: Sequence[EvalQuery], voted: set[str]) -> None:
    for stage, passes in raw.items():
        if stage == "baseline":
            continue
        for mode, current in passes.items():
            before = raw["baseline"][mode].ranks
            for query in queries:
                old, new = before[query.id], current.ranks[query.id]
                if old != new:
                    half = "voted" if query.id in voted else "held-out"
                    print(f"  {stage} {mode:<8} {half:<8} {query.id}: {old} → {new}  {query.question[:60]}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dev_set: Path = args.set.resolve()
    queries, skipped = load_queries(query_file(dev_set))
    if not queries:
        raise SystemExit(f"bench/ratings.py: no queries with gold sources in {dev_set}")
    collection_name = args.collection or dev_set.name
    # A seeded shuffle of the file order; the first share is voted on.
    order = list(range(len(queries)))
    random.Random(args.seed).shuffle(order)
    cut = round(len(order) * args.voted_share)
    if not 0 < cut < len(order):
        raise SystemExit(
            "bench/ratings.py: --voted-share must leave at least one voted and one held-out query"
        )
    voted = sorted(order[:cut])
    held_out = sorted(order[cut:])
    subsets = {
        "voted": [queries[i].id for i in voted],
        "held_out": [queries[i].id for i in held_out],
        "all": [q.id for q in queries],
    }
    if len(set(subsets["all"])) != len(queries):
        raise SystemExit(f"bench/ratings.py: query ids repeat in {dev_set}")
    began = time.perf_counter()

    with data_directory(args.data_dir) as data_dir:
        # An explicit database_url: a WENDA_DATABASE_URL in the environment must never receive bench data.
        overrides: dict[str, Any] = {}
        if args.max_rank_shift is not None:
            overrides["feedback"] = {"max_rank_shift": args.max_rank_shift}
        settings = Settings(data_dir=data_dir, database_url="", **overrides)
        setup_began = time.perf_counter()
        components = build_components(settings)
        setup_seconds = time.perf_counter() - setup_began
        policy = prior_policy(settings.feedback)
        answer_top_k = settings.retrieval.answer_top_k
        print(
            f"set: {dev_set} ({len(queries)} queries with gold sources, {skipped} without, skipped); "
            f"voted {len(voted)}, held out {len(held_out)} (seed {args.seed})"
        )
        print(
            f"data dir: {data_dir}{'' if args.data_dir else ' (temporary)'}; embedder {components.embedder.name}; "
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        )
        print(
            "policy: "
            + ", ".join(f"{name} {value}" for name, value in asdict(policy).items())
            + f"; answer_top_k {answer_top_k}; k {args.k}"
        )
        collection: retrieval.CollectionRef | None = None
        try:
            report = ingest(components, dev_set / "corpus", collection_name)
            print(
                f"ingest: {report.files} files, {report.uploaded} uploaded now, {report.documents} documents "
                f"ready ({report.chunks} chunks) in {report.seconds:.1f} s"
                + (f"; FAILED: {report.failed}" if report.failed else "")
            )
            collection = retrieval.resolve_collection(
                components, tenant_id=components.default_tenant_id, name=collection_name
            )
            others = clear_bench_votes(components, collection.id)
            if others:
                print(
                    f"warning: {others} live feedback rows from elsewhere are in force from the baseline on"
                )

            stage_seconds: dict[str, float] = {}
            spreads: dict[str, VoteSpread] = {}
            raw: dict[str, dict[str, Pass]] = {}
            rounds: list[VoteRound] = []
            eval_began = time.perf_counter()
            raw["baseline"] = evaluate(components, collection, queries, k=args.k)
            stage_seconds["baseline"] = time.perf_counter() - eval_began
            voters = [(i, queries[i]) for i in voted]
            embedded = components.embedder.embed_queries([query.question for query in queries])
            # As the feedback service stores a question's vector: float32, little-endian.
            vectors = {i: np.asarray(embedded[i], dtype="<f4").tobytes() for i in voted}
            for number in range(1, args.rounds + 1):
                rounds.append(
                    cast_votes(
                        components,
                        collection,
                        voters,
                        vectors=vectors,
                        number=number,
                        answer_top_k=answer_top_k,
                    )
                )
                stage = f"round {number}"
                spread = vote_spread(components, collection.id, policy)
                spreads[stage] = spread
                eval_began = time.perf_counter()
                raw[stage] = evaluate(components, collection, queries, k=args.k)
                stage_seconds[stage] = time.perf_counter() - eval_began
        finally:
            if args.data_dir is not None and collection is not None:
                clear_bench_votes(components, collection.id)
            components.close_database()
    seconds = time.perf_counter() - began

    near = nearness(embedded[held_out] @ embedded[voted].T, asdict(policy), subsets["held_out"], raw)
    stages = {stage: summarise(passes, raw["baseline"], subsets, args.k) for stage, passes in raw.items()}
    print_table(stages, args.k)
    print(
        "  better/worse: queries whose first gold rank rose/fell against the baseline; in/out: entered/left the top k"
    )
    if args.show_changes:
        print_changes(raw, queries, set(subsets["voted"]))
    for round_ in rounds:
        stage = f"round {round_.number}"
        spread = spreads[stage]
        print(
            f"{stage}: {round_.votes} votes (A up {round_.up_first}, A down {round_.down_first}, B up "
            f"{round_.up_second}; {round_.no_gold_in_passages} down votes with no gold passage in the top "
            f"{answer_top_k}) in {round_.seconds:.1f} s; live: {spread.votes} votes on {spread.chunks} chunks "
            f"({spread.chunks_up} net up, {spread.chunks_down} net down) in {spread.documents} documents"
        )
        print(
            f"  shift of the net votes if every vote counted for every question: chunks {spread.chunk_shift}, "
            f"documents {spread.document_shift} (places → how many)"
        )
        for mode in MODES:
            applied = stages[stage][mode]
            unit = "documents" if MODES[mode] else "chunks"
            print(
                f"  {mode}: {applied['queries_reordered']} of {len(queries)} results lists changed; {unit} moved "
                f"{applied['moved']} (places up → how many), {applied['new_in_top_k']} new in the top {args.k}; "
                f"chunk shifts reported {applied['chunk_shifts_reported']}"
            )
    print(
        f"held-out questions, cosine to the nearest voted question: {near['nearest_voted']}"
        + "".join(f"; {name} {value:.0%}" for name, value in near.items() if name.startswith("share"))
    )
    for mode in MODES:
        fell = near[f"fell_{mode}"]
        print(
            f"  {mode}: {fell['queries']} held-out questions fell since the baseline; their nearest: {fell['nearest_voted']}"
        )
    evaluation_seconds = sum(stage_seconds.values())
    print(
        f"times: setup {setup_seconds:.1f} s, ingest {report.seconds:.1f} s, evaluation "
        f"{evaluation_seconds:.1f} s ({1000 * evaluation_seconds / (len(stages) * len(MODES) * len(queries)):.0f} ms "
        f"per search), votes {sum(r.seconds for r in rounds):.1f} s; {seconds:.1f} s in all"
    )

    summary = {
        "benchmark": "ratings",
        "set": str(dev_set),
        "collection": collection_name,
        "queries": len(queries),
        "skipped_without_gold": skipped,
        "voted": len(voted),
        "held_out": len(held_out),
        "seed": args.seed,
        "k": args.k,
        "answer_top_k": answer_top_k,
        "policy": asdict(policy),
        "embedder": components.embedder.name,
        "ingest": {
            "files": report.files,
            "uploaded": report.uploaded,
            "documents": report.documents,
            "chunks": report.chunks,
            "seconds": round(report.seconds, 2),
            "failed": report.failed,
        },
        "stages": stages,
        "held_out_nearness": near,
        "rounds": [
            {
                "round": r.number,
                "votes": r.votes,
                "up_first": r.up_first,
                "down_first": r.down_first,
                "up_second": r.up_second,
                "no_gold_in_passages": r.no_gold_in_passages,
                "empty": r.empty,
                "seconds": round(r.seconds, 2),
                "live_votes": spreads[f"round {r.number}"].votes,
                "chunks_with_votes": spreads[f"round {r.number}"].chunks,
                "chunks_net_up": spreads[f"round {r.number}"].chunks_up,
                "chunks_net_down": spreads[f"round {r.number}"].chunks_down,
                "documents_with_votes": spreads[f"round {r.number}"].documents,
                "chunk_policy_shifts": spreads[f"round {r.number}"].chunk_shift,
                "document_policy_shifts": spreads[f"round {r.number}"].document_shift,
            }
            for r in rounds
        ],
        "seconds": {
            "setup": round(setup_seconds, 2),
            "ingest": round(report.seconds, 2),
            "evaluation": {stage: round(s, 2) for stage, s in stage_seconds.items()},
            "total": round(seconds, 2),
        },
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
