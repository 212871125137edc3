"""The ``wenda`` command: serve, worker, ingest, eval."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from app.config import Settings
from app.logs import configure_logging
from app.rag.filetypes import SUPPORTED_EXTENSIONS

if TYPE_CHECKING:
    from app.components import Components
    from app.schemas.ask import AskResponse
    from app.services.asking import AskInput

logger = logging.getLogger("wenda")

# The upload check's own list: a directory is walked for exactly what an upload accepts.
SUPPORTED_SUFFIXES = frozenset(SUPPORTED_EXTENSIONS)


def _components(settings: Settings) -> Components:
    """The long-lived objects, as `wenda serve` builds them."""
    from app.components import build_components
    from app.services.models import register_configured_adapters

    components = build_components(settings)
    if settings.models.adapters:
        register_configured_adapters(components, settings.models.adapters)
    return components


def _answer(components: Components, ask: AskInput) -> AskResponse:
    """One answer through the same flow the API uses, recorded as asked from the command line."""
    import asyncio

    from app.api.answer_shapes import answer_response
    from app.services import asking

    async def run() -> AskResponse:
        started = await asking.start_answer(
            components, tenant_id=components.default_tenant_id, ask=ask, endpoint="cli"
        )
        return answer_response(await started.result(), started.query_id, debug=False)

    return asyncio.run(run())


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app

    # No log_config: uvicorn's loggers, its access log included, go through our handler (JSON, request id).
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        log_config=None,
    )
    return 0


def _worker(_args: argparse.Namespace, settings: Settings) -> int:
    from app import metrics
    from app.services.health import queue_depth
    from ingest.reconcile import reconcile_all

    components = _components(settings)
    reconcile_all(components.session_factory, components.store, embedding_model=components.embedder.name)
    metrics.QUEUE_DEPTH.watch(partial(queue_depth, components))
    if settings.worker.metrics_port is not None:
        metrics.serve_on_port(settings.worker.metrics_port)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping worker %s", components.worker.worker_id)
        components.worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("worker %s waiting for jobs", components.worker.worker_id)
    try:
        components.worker.start()
        components.worker.wait()
    finally:
        components.store.close()
    return 0


def _expand(paths: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """The files to ingest, and the files of directories left out for their type (named files are always
    tried: the server says why it refuses one)."""
    files: list[Path] = []
    unsupported: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                (files if found.suffix.lower() in SUPPORTED_SUFFIXES else unsupported).append(found)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"wenda ingest: {raw}: no such file or directory")
    return files, unsupported


# tqdm's default bar with the count to two decimals (documents still running count in part).
_BAR = "{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from app.db.statuses import JobStatus
    from app.rag.errors import WendaError
    from app.services import documents

    files, unsupported = _expand(args.paths)
    for path in unsupported:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        print(f"skipped {path}: not a supported type ({supported})", file=sys.stderr)
    components = _components(settings)
    tenant_id = components.default_tenant_id
    job_ids: list[int] = []
    rejected = 0
    for path in files:
        try:
            outcome = documents.upload(
                components,
                tenant_id=tenant_id,
                collection=args.collection,
                filename=path.name,
                data=path.read_bytes(),
                metadata={"path": str(path)},
            )
        except WendaError as error:
            rejected += 1
            print(f"skipped {path}: {error.message}", file=sys.stderr)
            continue
        if outcome.job_id is not None and not (outcome.duplicate and outcome.status == "ready"):
            job_ids.append(outcome.job_id)
    components.worker.start()
    failed: list[str] = []
    try:
        # Log lines go above the bar instead of through it; the bar counts documents, in fractions while
        # their jobs run (a large document's embedding moves it too).
        with (
            logging_redirect_tqdm(),
            tqdm(total=len(job_ids), unit="doc", desc=f"ingest → {args.collection}", bar_format=_BAR) as bar,
        ):
            pending = set(job_ids)
            finished = 0
            while pending:
                time.sleep(0.3)
                running = 0.0
                for job_id in list(pending):
                    job = documents.get_job(components, tenant_id=tenant_id, job_id=job_id)
                    if job.status in (JobStatus.DONE, JobStatus.FAILED):
                        pending.discard(job_id)
                        finished += 1
                        if job.status == JobStatus.FAILED:
                            failed.append(f"job {job_id}: {job.error}")
                    else:
                        running += job.progress
                bar.n = round(finished + running, 2)
                bar.refresh()
    finally:
        components.worker.stop()
    for line in failed:
        print(f"failed {line}", file=sys.stderr)
    print(
        json.dumps(
            {
                "collection": args.collection,
                "files": len(files),
                "queued": len(job_ids),
                "failed": len(failed),
                "rejected": rejected,
                "unsupported": len(unsupported),
            }
        )
    )
    return 1 if failed or rejected else 0


def _eval_retrieval(args: argparse.Namespace, settings: Settings) -> int:
    from app.rag.evaluation import RetrievalScores, first_hit_rank, load_queries
    from app.services import retrieval

    components = _components(settings)
    queries, skipped = load_queries(Path(args.queries))
    scores = RetrievalScores(k=args.k)
    began = time.perf_counter()
    collection = retrieval.resolve_collection(
        components, tenant_id=components.default_tenant_id, name=args.collection
    )
    for query in queries:
        chunks = retrieval.search_collection(
            components,
            tenant_id=components.default_tenant_id,
            collection=collection,
            query=query.question,
            top_k=args.k,
            mode=args.mode,
            diversify=args.diversify,
        )
        # A chunk comes from every file with its document's bytes: the uploaded name and its aliases.
        scores.add(first_hit_rank([{chunk.source, *chunk.aliases} for chunk in chunks], query.gold_sources))
    elapsed = time.perf_counter() - began
    print(
        json.dumps(
            {
                "collection": args.collection,
                "queries": len(queries),
                "skipped_without_gold": skipped,
                "k": args.k,
                "mode": args.mode or settings.retrieval.mode,
                "diversify": args.diversify,
                f"hit_at_{args.k}": round(scores.hit_at_k, 4),
                f"mrr_at_{args.k}": round(scores.mrr_at_k, 4),
                "seconds_per_query": round(elapsed / max(len(queries), 1), 4),
            }
        )
    )
    return 0


def _prepare_model(_args: argparse.Namespace, settings: Settings) -> int:
    from app.rag.llm_local import prepare_bundled_model

    print(prepare_bundled_model(settings.local_model_dir))
    return 0


def _ask(args: argparse.Namespace, settings: Settings) -> int:
    from app.services.asking import AskInput

    components = _components(settings)
    ask = AskInput(
        collection=args.collection,
        question=args.question,
        model=args.model,
        template=args.template,
        timezone=args.tz,
    )
    response = _answer(components, ask)
    print(json.dumps(response.model_dump(), ensure_ascii=False, indent=2) if args.json else response.answer)
    if not args.json:
        for number, citation in enumerate(response.citations, start=1):
            print(f"  [{number}] {citation.source} {citation.start}-{citation.end}: {citation.quote}")
    return 0


def _eval_answers(args: argparse.Namespace, settings: Settings) -> int:
    from app.rag.errors import NotFoundError
    from app.rag.evaluation import AnswerScores, load_answer_questions
    from app.services import documents, retrieval
    from app.services.asking import AskInput

    components = _components(settings)
    tenant_id = components.default_tenant_id
    retrieval.resolve_collection(components, tenant_id=tenant_id, name=args.collection)  # fails early
    questions = load_answer_questions(Path(args.questions))[: args.limit or None]
    scores = AnswerScores()

    def names_of(document_id: int | None, source: str) -> set[str]:
        if document_id is None:
            return {source}
        try:
            document = documents.get_document(components, tenant_id=tenant_id, document_id=document_id)
        except NotFoundError:
            return {source}
        return {document.filename, *document.aliases}

    for question in questions:
        ask = AskInput(collection=args.collection, question=question.question, model=args.model)
        began = time.perf_counter()
        response = _answer(components, ask)
        cited = [(names_of(c.document_id, c.source), c.quote) for c in response.citations]
        scores.add(
            question,
            answer=response.answer,
            grounded=response.grounded,
            cited=cited,
            seconds=time.perf_counter() - began,
        )
        if args.verbose:
            print(
                json.dumps(
                    {"id": question.id, "grounded": response.grounded, "answer": response.answer},
                    ensure_ascii=False,
                ),
                file=sys.stderr,
            )
    print(json.dumps({"collection": args.collection, "questions": len(questions), **scores.summary()}))
    return 0


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise SystemExit(f"wenda: --since {value!r} is not an ISO date or time (2026-12-01, 2026-12-01T08:00)") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _feedback_export(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import feedback

    components = _components(settings)
    lines = feedback.export_feedback(
        components,
        tenant_id=components.default_tenant_id,
        export_format=args.format,
        collection=args.collection,
        since=_since(args.since),
    )
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{count} {args.format} examples", file=sys.stderr)
    return 0


def _train_lora(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from app.db.statuses import JobStatus
    from app.services import documents, models

    components = _components(settings)
    tenant_id = components.default_tenant_id
    job = models.start_training(
        components,
        tenant_id=tenant_id,
        request=models.TrainingRequest(
            name=args.name,
            data=Path(args.data) if args.data else None,
            collection=args.collection,
            since=_since(args.since),
            steps=args.steps,
            rank=args.rank,
            learning_rate=args.lr,
            description=args.description,
        ),
    )
    components.worker.start()
    try:
        with logging_redirect_tqdm(), tqdm(total=1.0, desc=f"train {args.name}", bar_format=_BAR) as bar:
            while job.status not in (JobStatus.DONE, JobStatus.FAILED):
                time.sleep(1.0)
                job = documents.get_job(components, tenant_id=tenant_id, job_id=job.job_id)
                bar.n = round(job.progress, 2)
                bar.set_postfix_str(job.stage)
                bar.refresh()
    finally:
        components.worker.stop()
    if job.status == JobStatus.FAILED:
        print(f"wenda train-lora: job {job.job_id} failed: {job.error}", file=sys.stderr)
        return 1
    print(json.dumps({"job_id": job.job_id, **job.result}, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wenda", description="Document question answering (问答).")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (and the in-process worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run an ingestion worker process")
    worker.set_defaults(handler=_worker)

    ingest = commands.add_parser("ingest", help="add files or directories to a collection and wait for them")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--collection", required=True)
    ingest.set_defaults(handler=_ingest)

    ask = commands.add_parser("ask", help="answer a question from a collection, with checked citations")
    ask.add_argument("question")
    ask.add_argument("--collection", required=True)
    ask.add_argument("--model", default=None)
    ask.add_argument("--template", default="qa")
    ask.add_argument("--tz", default=None, help="the asker's IANA time zone (default: facts.default_timezone)")
    ask.add_argument("--json", action="store_true", help="print the whole response as JSON")
    ask.set_defaults(handler=_ask)

    feedback = commands.add_parser("feedback", help="feedback on answers")
    feedback_commands = feedback.add_subparsers(dest="action", required=True)
    export = feedback_commands.add_parser(
        "export", help="approved corrections and up-voted answers as training JSONL (TRL's formats)"
    )
    export.add_argument("--format", choices=["sft", "dpo"], required=True)
    export.add_argument("--collection", default=None)
    export.add_argument("--since", default=None, help="only feedback given since then (ISO date or time, UTC)")
    export.add_argument("--output", "-o", default=None, help="a file to write (default: standard output)")
    export.set_defaults(handler=_feedback_export)

    train = commands.add_parser(
        "train-lora", help="fine-tune a LoRA adapter of the base model and register it (waits for the job)"
    )
    train.add_argument("--name", required=True, help="the adapter's name, as requests will give it")
    train.add_argument("--data", default=None, help="an SFT JSONL file (default: export the feedback now)")
    train.add_argument("--collection", default=None, help="without --data: that collection's feedback only")
    train.add_argument("--since", default=None, help="without --data: feedback given since then")
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (default: training.steps)")
    train.add_argument("--rank", type=int, default=None, help="LoRA rank (default: training.rank)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: training.learning_rate)")
    train.add_argument("--description", default="", help="its domain, for auto routing")
    train.set_defaults(handler=_train_lora)

    prepare = commands.add_parser(
        "prepare-model", help="prepare the bundled chat model once and print its folder"
    )
    prepare.set_defaults(handler=_prepare_model)

    evaluate = commands.add_parser("eval", help="measure retrieval or answer quality")
    eval_kinds = evaluate.add_subparsers(dest="kind", required=True)
    retrieval = eval_kinds.add_parser("retrieval", help="hit@k and MRR@k over a JSONL query file")
    retrieval.add_argument("--collection", required=True)
    retrieval.add_argument("--queries", required=True)
    retrieval.add_argument("--k", type=int, default=5)
    retrieval.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default=None)
    retrieval.add_argument(
        "--no-diversify",
        dest="diversify",
        action="store_false",
        help="plain passage order instead of the best passage of each document first (as /v1/retrieve does)",
    )
    retrieval.set_defaults(handler=_eval_retrieval)
    answers = eval_kinds.add_parser("answers", help="accuracy, refusal rate, citation precision and latency")
    answers.add_argument("--collection", required=True)
    answers.add_argument("--questions", required=True)
    answers.add_argument("--model", default=None)
    answers.add_argument("--limit", type=int, default=0, help="only the first N questions")
    answers.add_argument("--verbose", action="store_true", help="print each answer to stderr")
    answers.set_defaults(handler=_eval_answers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.rag.errors import WendaError

    args = build_parser().parse_args(argv)
    settings = Settings()
    # The service processes own their process's logging; a one-off command run inside another program (a
    # test, a notebook) leaves that program's handlers alone, as logging.basicConfig would.
    configure_logging(settings.log_level, settings.log_format, replace=args.command in ("serve", "worker"))
    handler = args.handler
    try:
        return int(handler(args, settings))
    except WendaError as error:
        # What the user can act on, in one line (an unknown collection, a bad query file): no traceback.
        print(f"wenda {args.command}: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
