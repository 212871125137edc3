"""`wenda serve` starts quietly: what it logs at INFO is about wenda, not its libraries' start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_serve_logs_no_library_chatter_at_info_and_is_ready_once_the_model_is(
    tmp_path: Path, bundled_model_dir: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "WENDA_DATA_DIR": str(tmp_path / "data"),
        "WENDA_LOG_LEVEL": "INFO",
        "WENDA_LLM__LOCAL_MODEL_DIR": str(bundled_model_dir),
    }
    starting: list[dict[str, object]] = []
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "not ready within 120 s"
            try:
                readiness = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if readiness.status_code == 200:
                break
            starting.append(readiness.json())
            time.sleep(0.2)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    # uvicorn's access log of our own polling is not start-up noise.
    lines = [line for line in output.splitlines() if line.strip() and "GET /readyz" not in line]
    assert not [line for line in lines if "faiss.loader" in line or "alembic" in line], lines
    assert any("database schema migrated from empty to revision" in line for line in lines), lines
    assert any("chat model" in line and "ready in" in line for line in lines), lines
    # Libraries' warnings (transformers', torch's) are not a newcomer's business at start-up.
    assert not [line for line in lines if "warn" in line.lower()], lines
    assert len(lines) <= 12, lines
    # While the model loaded, /readyz said what it waited for.
    assert all(body["checks"] == {"chat_model": body["checks"]["chat_model"]} for body in starting), starting
