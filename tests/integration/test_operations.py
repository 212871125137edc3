"""What an operator sees, with the processes of a deployment: `wenda serve` without its in-process worker,
a `wenda worker` process with its own /metrics, PostgreSQL, and an OpenAI-compatible model server on loopback.

/metrics is read with prometheus_client's own parser after an upload, answers and feedback; the JSON logs
of both processes are read whole for request ids and for what must never be in them at INFO.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.upstream import ANSWER, running_upstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-wenda-test-5f3a9c1e7b"
# Words of the document and questions that must stay out of the logs.
SECRET_FACT = "The quartermaster keeps the zebra ledger in cabinet 7 of the north annex."
DOCUMENT = f"# Branches\n\nA branch in Git is a movable pointer to a commit. Run git branch to list branches.\n\n# Stores\n\n{SECRET_FACT}\n"
QUESTION = "How do I list branches in Git?"
UNANSWERABLE = "How do I format a disk as exFAT?"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels, read by prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _wait(check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)


def _finished_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    """The job once the worker has finished it, done or failed."""
    return _wait(
        lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("done", "failed") and job,
        f"the worker finishes job {job_id}",
    )


@pytest.fixture
def upstream_url() -> Iterator[str]:
    with running_upstream() as (url, _state):
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_metrics_and_logs_of_an_api_and_a_worker_process(
    tmp_path: Path, database_url: str, upstream_url: str
) -> None:
    api_port, worker_metrics_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "WENDA_DATA_DIR": str(tmp_path / "data"),
        "WENDA_DATABASE_URL": database_url,
        "WENDA_LOG_LEVEL": "INFO",
        "WENDA_LOG_FORMAT": "json",
        "WENDA_WORKER__IN_PROCESS": "false",
        "WENDA_WORKER__POLL_SECONDS": "0.2",
        "WENDA_LLM__BACKEND": "openai",
        "WENDA_LLM__BASE_URL": upstream_url,
        "WENDA_LLM__MODEL": "ok",
        "WENDA_LLM__API_KEY": API_KEY,
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    processes: list[subprocess.Popen[bytes]] = []
    api = f"http://127.0.0.1:{api_port}"
    try:
        with api_log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "serve", "--port", str(api_port)],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        client = httpx.Client(base_url=api, timeout=60)
        _wait(lambda: client.get("/readyz").status_code == 200, "the API is ready")

        # Queued while no worker runs: the API's /metrics counts it from SQL.
        request_id = str(uuid.uuid4())
        accepted = client.post(
            "/v1/collections/ops/documents",
            files={"file": ("stores.md", DOCUMENT.encode())},
            headers={"X-Request-ID": request_id},
        )
        assert accepted.status_code == 202 and accepted.headers["x-request-id"] == request_id
        queued = _samples(client.get("/metrics").text)
        assert _value(queued, "wenda_queue_depth", kind="ingest", status="queued") == 1

        with worker_log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker"],
                    cwd=ROOT, env={**env, "WENDA_WORKER__METRICS_PORT": str(worker_metrics_port)},
                    stdout=out, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        job_id = accepted.json()["job_id"]
        job = _finished_job(client, job_id)
        assert job["status"] == "done", job

        # The worker process exports its own series: the job and the duration of each of its stages.
        worker = _samples(httpx.get(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=10).text)
        assert _value(worker, "wenda_jobs_total", kind="ingest", outcome="done") == 1
        for stage in ("parse", "chunk", "embed", "index"):
            assert _value(worker, "wenda_job_stage_duration_seconds_count", kind="ingest", stage=stage) == 1
            assert _value(worker, "wenda_job_stage_duration_seconds_sum", kind="ingest", stage=stage) > 0
        assert _value(worker, "wenda_queue_depth", kind="ingest", status="queued") == 0

        # A file that cannot be parsed: its job fails in the parse stage, counted as rejected; the parse
        # child's own log lines carry the job's id.
        broken = client.post("/v1/collections/ops/documents", files={"file": ("broken.pdf", b"%PDF-1.7\n%garbage")})
        assert broken.status_code == 202, broken.text
        broken_job_id = broken.json()["job_id"]
        failed = _finished_job(client, broken_job_id)
        assert failed["status"] == "failed", failed
        worker = _samples(httpx.get(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=10).text)
        assert _value(worker, "wenda_jobs_total", kind="ingest", outcome="failed") == 1
        assert _value(worker, "wenda_job_failures_total", kind="ingest", stage="parse", error="rejected") == 1

        answered = client.post("/v1/ask", json={"collection": "ops", "question": QUESTION}).json()
        assert answered["grounded"], answered
        refused = client.post("/v1/ask", json={"collection": "ops", "question": UNANSWERABLE}).json()
        assert refused["refusal"]["reason"] == "unmentioned_name", refused
        streamed = client.post("/v1/ask", json={"collection": "ops", "question": QUESTION, "stream": True})
        assert streamed.status_code == 200 and "event: done" in streamed.text
        assert client.post("/v1/retrieve", json={"collection": "ops", "query": QUESTION}).status_code == 200
        rated = client.post("/v1/feedback", json={"query_id": answered["query_id"], "rating": "up"})
        assert rated.status_code == 201
        corrected = client.post(
            "/v1/feedback",
            json={"query_id": answered["query_id"], "rating": "down", "correction": "Use git branch --all."},
        )
        assert corrected.status_code == 201

        # A method no client should send counts as "other": requests cannot add series.
        assert client.request("FOO1", "/nope").status_code in (404, 405)
        samples = _samples(client.get("/metrics").text)
        assert _value(samples, "wenda_http_requests_total", handler="none", method="other", status="4xx") == 1
        assert not [key for key in samples if ("method", "FOO1") in key[1]]
        assert _value(samples, "wenda_answers_total", endpoint="ask", status="answered") == 2
        assert _value(samples, "wenda_answers_total", endpoint="ask", status="refused") == 1
        assert _value(samples, "wenda_refusals_total", reason="unmentioned_name") == 1
        assert _value(samples, "wenda_tokens_total", model="ok", kind="prompt") > 0
        assert _value(samples, "wenda_tokens_total", model="ok", kind="completion") > 0
        assert _value(samples, "wenda_generation_duration_seconds_count", model="ok") == 2
        assert _value(samples, "wenda_retrieval_duration_seconds_count", endpoint="ask") == 3
        assert _value(samples, "wenda_retrieval_duration_seconds_count", endpoint="retrieve") == 1
        assert _value(samples, "wenda_feedback_total", rating="up", correction="no") == 1
        assert _value(samples, "wenda_feedback_total", rating="down", correction="yes") == 1
        ask_route = {"handler": "/v1/ask", "method": "POST", "status": "2xx"}
        assert _value(samples, "wenda_http_request_duration_seconds_count", **ask_route) == 3
        assert _value(samples, "wenda_http_request_duration_seconds_sum", **ask_route) > 0
        upload_route = {"handler": "/v1/collections/{collection}/documents", "method": "POST", "status": "2xx"}
        assert _value(samples, "wenda_http_requests_total", **upload_route) == 2  # the document and the broken file
        # Ingestion ran in the worker: the API process counts none of it.
        assert _value(samples, "wenda_jobs_total", kind="ingest", outcome="done") == 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    api_lines = _json_lines(api_log)
    worker_lines = _json_lines(worker_log)
    for line in api_lines + worker_lines:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys(), line
    # The upload's lines (uvicorn's access log among them) carry the id the client sent.
    upload_lines = [line for line in api_lines if line["request_id"] == request_id]
    assert any("/v1/collections/ops/documents" in line["message"] for line in upload_lines), upload_lines
    # Each request has an id of its own, and the worker's lines about the job carry the job's.
    asks = [line for line in api_lines if "POST /v1/ask" in line["message"]]
    assert len(asks) == 3 and len({line["request_id"] for line in asks}) == 3 and all(
        line["request_id"] for line in asks
    )
    assert any(line["request_id"] == f"job-{job_id}" and "done" in line["message"] for line in worker_lines)
    # The parse child's line about the broken file, in JSON, with the job's id.
    assert any(
        line["request_id"] == f"job-{broken_job_id}" and line["logger"] == "ingest.parsing" for line in worker_lines
    ), [line for line in worker_lines if line["request_id"] == f"job-{broken_job_id}"]

    everything = api_log.read_text(encoding="utf-8") + worker_log.read_text(encoding="utf-8")
    at_info = [json.dumps(line, ensure_ascii=False) for line in api_lines + worker_lines if line["level"] == "INFO"]
    assert at_info
    never_logged = (
        "zebra ledger", "quartermaster", "cabinet 7", "list branches in Git", "exFAT",
        ANSWER, "Use git branch --all", API_KEY,
    )  # fmt: skip
    for text in never_logged:
        assert not [line for line in at_info if text in line], text
    assert API_KEY not in everything


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name}: not a JSON log line: {line}") from None
    return parsed
