"""Every Prometheus series wenda exports (names prefixed ``wenda_``), and the functions that observe them.

The series live in prometheus_client's process-wide registry, as that library intends: one definition per
process however many apps a process builds (tests build many). The API serves them at ``/metrics``
(``app/api/metrics.py``, which also holds the HTTP series); a ``wenda worker`` process serves its own on
``worker.metrics_port``. Labels take only values from small fixed
sets (stages, statuses, reasons, model and adapter names, route templates), never a question or a file name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.rag.answering import Answer

logger = logging.getLogger(__name__)

# Seconds, for every duration (the HTTP histogram's too): from a cached retrieval (milliseconds) to a long CPU
# generation or an OCR'd PDF (minutes).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOB_STAGE_SECONDS = Histogram(
    "wenda_job_stage_duration_seconds",
    "Duration of a finished job's stages (ingest: parse, chunk, embed, index).",
    ["kind", "stage"],
    buckets=SECONDS_BUCKETS,
)
JOBS = Counter("wenda_jobs_total", "Jobs finished, by kind and outcome (done, failed, retried).", ["kind", "outcome"])
JOB_FAILURES = Counter(
    "wenda_job_failures_total",
    "Failed job attempts, by kind, the stage they failed in and why (rejected: the input was refused, "
    "e.g. a file that cannot be parsed; otherwise the error's type).",
    ["kind", "stage", "error"],
)
RETRIEVAL_SECONDS = Histogram(
    "wenda_retrieval_duration_seconds",
    "Duration of hybrid retrieval (dense + BM25, fused), by endpoint (retrieve, ask, chat, cli).",
    ["endpoint"],
    buckets=SECONDS_BUCKETS,
)
GENERATION_SECONDS = Histogram(
    "wenda_generation_duration_seconds",
    "Duration of generation by the model that answered (a fallback's includes the adapter's attempt).",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
TOKENS = Counter("wenda_tokens_total", "Tokens by model and kind (prompt, completion).", ["model", "kind"])
ANSWERS = Counter(
    "wenda_answers_total",
    "Answers by endpoint and status (answered, refused, cancelled, failed).",
    ["endpoint", "status"],
)
REFUSALS = Counter(
    "wenda_refusals_total",
    "Refused answers by reason (no_passages, no_context_room, unmentioned_name, model_refused, unsupported).",
    ["reason"],
)
FALLBACKS = Counter(
    "wenda_model_fallbacks_total",
    "Answers the base model gave because the chosen adapter failed or was unsure, by adapter and cause.",
    ["adapter", "cause"],
)
FEEDBACK = Counter(
    "wenda_feedback_total",
    "Feedback received, by rating (up, down) and whether it carries a correction.",
    ["rating", "correction"],
)
FEEDBACK_REVIEWS = Counter(
    "wenda_feedback_reviews_total", "Feedback reviewed, by action (approved, withdrawn).", ["action"]
)


def observe_answer(endpoint: str, answer: Answer) -> None:
    """Everything one answer says about the service: its outcome, refusal, route, tokens and timings."""
    ANSWERS.labels(endpoint, answer.status.value).inc()
    if answer.refusal is not None:
        REFUSALS.labels(answer.refusal.reason.value).inc()
    route = answer.route
    if route is not None and route.cause is not None and route.adapter is not None:
        FALLBACKS.labels(route.adapter, route.cause.value).inc()
    if "retrieve" in answer.timings:
        RETRIEVAL_SECONDS.labels(endpoint).observe(answer.timings["retrieve"])
    # Generation is timed only where a model generated: not for a refusal decided before the call, nor for an
    # approved correction given as the answer.
    asked_model = answer.from_correction is None and not (answer.refusal and answer.refusal.reason.before_generation)
    if asked_model and "generate" in answer.timings and answer.model:
        GENERATION_SECONDS.labels(answer.model).observe(answer.timings["generate"])
    if answer.model:
        TOKENS.labels(answer.model, "prompt").inc(answer.usage.prompt_tokens)
        TOKENS.labels(answer.model, "completion").inc(answer.usage.completion_tokens)


def observe_job_done(kind: str, timings: Mapping[str, float]) -> None:
    JOBS.labels(kind, "done").inc()
    for stage, seconds in timings.items():
        JOB_STAGE_SECONDS.labels(kind, stage).observe(seconds)


def observe_job_failed(kind: str, stage: str, error: str, *, retried: bool) -> None:
    JOB_FAILURES.labels(kind, stage or "start", error).inc()
    JOBS.labels(kind, "retried" if retried else "failed").inc()


QueueCounts = Callable[[], Iterable[tuple[str, str, int]]]


class QueueDepth(Collector):
    """``wenda_queue_depth{kind, status}``: jobs queued or running, read from SQL when scraped, so that
    every process reports the whole queue, whoever filled it.

    One instance per process (a collector is registered once); the wiring hands it the reader of the
    components it built, and takes it back when they close.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: list[QueueCounts] = []

    def watch(self, read: QueueCounts) -> None:
        with self._lock:
            self._readers.append(read)

    def forget(self, read: QueueCounts) -> None:
        with self._lock:
            if read in self._readers:
                self._readers.remove(read)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "wenda_queue_depth", "Jobs waiting or running, by kind and status, read from SQL.", labels=["kind", "status"]
        )
        with self._lock:
            read = self._readers[-1] if self._readers else None
        if read is not None:
            try:
                for kind, status, count in read():
                    family.add_metric([kind, status], count)
            except Exception as error:
                # A scrape during a database outage still returns every other series.
                logger.warning("queue depth not read: %s", type(error).__name__)
        yield family


QUEUE_DEPTH = QueueDepth()
REGISTRY.register(QUEUE_DEPTH)


def serve_on_port(port: int, host: str = "0.0.0.0") -> None:  # all interfaces: scraped from outside a container
    """A worker process's own ``/metrics``, on a thread of prometheus_client's HTTP server."""
    start_http_server(port, addr=host)
    logger.info("metrics served on %s:%d", host, port)
