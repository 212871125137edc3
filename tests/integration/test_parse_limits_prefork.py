"""Parsing limits hold inside prefork worker processes, where ``multiprocessing`` may not start children.

Celery's prefork pool runs tasks in daemonic billiard processes, and the standard library refuses to start a
child from one ("daemonic processes are not allowed to have children"), so neither its fork server nor
``ProcessPoolExecutor`` works there. The same three files go through a bare billiard pool and through a real
``celery worker --pool=prefork`` on Redis: a normal file parses, one over the memory limit and one over the
time limit fail with their own ``DocumentParseError``, and all three come from one fork server per worker
process rather than an interpreter per parse.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import billiard
import pytest
import redis
from celery import Celery

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest import parse_limits
from ingest.parse_limits import parse_in_subprocess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("WENDA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Set where Redis is part of the test environment, so that a missing one fails instead of skipping.
REQUIRE_REDIS = os.environ.get("WENDA_REQUIRE_REDIS") == "1"

# bs4 needs ~10 s for this (~5 MiB); a 1 s limit stops it long before.
SLOW_HTML = b"<html><body>" + b"<p>word <b>bold</b> text</p>" * 200_000 + b"</body></html>"
EXPECTED = {
    "normal": {"text": "正文。\n\nMore text.\n"},
    "over_memory": {
        "error": "parsing needed more than 200 MiB of memory; the file may be too large or too complex"
    },
    "over_time": {"error": "parsing took longer than 1 s; the file may be damaged or too complex"},
}

celery_app = Celery("wenda-parse-limits-test", broker=REDIS_URL, backend=REDIS_URL)
# No remote control: it would leave its own keys in Redis, and the test sends the worker nothing but tasks.
celery_app.conf.update(
    result_expires=300,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=False,
)


def parse_case(case: str) -> dict[str, str | int | bool]:
    """Parse one of the cases in this process, as a task would; built here so that no 96 MiB crosses a pipe."""
    outcome: dict[str, str | int | bool] = {"daemon": multiprocessing.current_process().daemon}
    try:
        if case == "normal":
            document = parse_in_subprocess(
                "正文。\n\nMore text.\n".encode(), FileType.TEXT, timeout_seconds=30, memory_mb=1024
            )
        elif case == "over_memory":
            # ~60 MiB of interpreter and parsers + the 96 MiB file fit in 200 MiB; its decoded text does not.
            document = parse_in_subprocess(
                b"a" * (96 * 1024 * 1024), FileType.TEXT, timeout_seconds=30, memory_mb=200
            )
        else:
            document = parse_in_subprocess(SLOW_HTML, FileType.HTML, timeout_seconds=1, memory_mb=1024)
    except DocumentParseError as exc:
        outcome["error"] = exc.message
    else:
        outcome["text"] = document.text
    server = parse_limits._fork_server._process
    outcome["server"] = -1 if server is None else server.pid
    return outcome


@celery_app.task(name="parse_case")
def parse_case_task(case: str) -> dict[str, str | int | bool]:
    return parse_case(case)


def test_limits_hold_in_a_billiard_pool_process() -> None:
    # A fork server in this process first: the pool process, forked from here, must start one of its own.
    parse_in_subprocess(b"hello", FileType.TEXT, timeout_seconds=30, memory_mb=1024)
    with billiard.Pool(processes=1) as pool:
        outcomes = dict(zip(EXPECTED, pool.map(parse_case, list(EXPECTED)), strict=True))
    # The premise: the pool process is daemonic, where multiprocessing refuses to start children.
    assert all(outcome.pop("daemon") for outcome in outcomes.values())
    _assert_one_fork_server(outcomes)
    assert outcomes == EXPECTED


def test_limits_hold_in_a_celery_prefork_worker(tmp_path: Path) -> None:
    if not _redis_reachable():
        if REQUIRE_REDIS:
            pytest.fail(f"Redis not reachable at {REDIS_URL}, and WENDA_REQUIRE_REDIS=1")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    # A queue of this run's own, so that neither another run's worker nor a leftover task interferes.
    queue = f"wenda-parse-limits-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as log_file:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                f"{__name__}:celery_app",
                "worker",
                "--pool=prefork",
                "--concurrency=1",
                f"--queues={queue}",
                f"--hostname={queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    results = {case: parse_case_task.apply_async((case,), queue=queue) for case in EXPECTED}
    try:
        outcomes = {case: result.get(timeout=60) for case, result in results.items()}
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        for result in results.values():
            result.forget()
        # kombu keeps a queue's bindings in Redis sets that nothing else removes.
        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    assert all(outcome.pop("daemon") for outcome in outcomes.values()), log.read_text()
    _assert_one_fork_server(outcomes)
    assert outcomes == EXPECTED, log.read_text()


def _assert_one_fork_server(outcomes: dict[str, dict[str, str | int | bool]]) -> None:
    # One worker process, so one fork server of its own: forked children, not an interpreter per parse.
    servers = {outcome.pop("server") for outcome in outcomes.values()}
    assert len(servers) == 1
    assert servers != {-1}
    own = parse_limits._fork_server._process
    assert own is None or own.pid not in servers


def _redis_reachable() -> bool:
    address = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((address.hostname or "127.0.0.1", address.port or 6379), timeout=3):
            return True
    except OSError:
        return False
