"""The loop closed: an approved correction exported and trained into a LoRA adapter of the bundled model by a job
(POST /v1/models/adapters/train), which registers it; /v1/models lists it and a request that names it is
answered by it. The exports are read by TRL's own dataset code as they are."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.components import Components, build_components
from app.main import create_app
from app.rag.llm import GenerationParams
from app.rag.types import ChatMessage
from tests.api.test_documents_api import assert_envelope
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

DOCUMENT = "# Support portal\n\nThe support portal accepts attachments of up to 10 MB each.\n"
QUESTION = "What is the maximum attachment size in the support portal?"
CORRECTION = "Attachments in the support portal may be up to 25 MB each since March."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Iterator[tuple[TestClient, Components]]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        worker={"poll_seconds": 0.1},
        llm={"local_model_dir": bundled_model_dir, "max_tokens": 48},
    )
    services = build_components(settings, embedder=FakeEmbedder())
    with TestClient(create_app(components=services)) as client:
        job = client.post("/v1/collections/kb/documents", files={"file": ("portal.md", DOCUMENT.encode())}).json()
        _wait(client, job["job_id"], 120)
        yield client, services
    services.worker.stop()
    services.engine.dispose()


def _wait(client: TestClient, job_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, float]] = []
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        seen.append((job["stage"], job["progress"]))
        if job["status"] in ("done", "failed"):
            job["seen"] = seen
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {seen[-3:]}")


def _corrected(client: TestClient) -> None:
    answer = client.post("/v1/ask", json={"collection": "kb", "question": QUESTION}).json()
    given = client.post(
        "/v1/feedback", json={"query_id": answer["query_id"], "rating": "down", "correction": CORRECTION}
    ).json()
    assert client.post(f"/v1/feedback/{given['id']}/approve").status_code == 200


def test_exports_load_in_trl(served: tuple[TestClient, Components], bundled_model_dir: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    client, _services = served
    _corrected(client)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    for export_format, columns in (("sft", {"messages"}), ("dpo", {"prompt", "chosen", "rejected"})):
        lines = [json.loads(x) for x in client.get(f"/v1/feedback/export?format={export_format}").text.splitlines()]
        dataset = Dataset.from_list(lines)
        assert set(dataset.column_names) == columns and len(dataset) == 1
        assert is_conversational(dataset[0])
        rendered = maybe_apply_chat_template(dataset[0], tokenizer)
        if export_format == "sft":
            assert CORRECTION in rendered["text"] and QUESTION in rendered["text"]
        else:
            assert QUESTION in rendered["prompt"] and CORRECTION in rendered["chosen"]
            assert "25 MB" not in rendered["rejected"]


def test_feedback_trains_an_adapter_that_is_registered_and_answers_by_name(
    served: tuple[TestClient, Components],
) -> None:
    client, services = served
    if not client.get("/v1/feedback?status=approved").json()["data"]:
        _corrected(client)
    assert_envelope(client.post("/v1/models/adapters/train", json={"name": "auto"}), 422, "adapter_rejected")
    assert_envelope(
        client.post("/v1/models/adapters/train", json={"name": "x", "collection": "kb", "rank": 64}), 400
    )
    assert_envelope(
        client.post("/v1/models/adapters/train", json={"name": "x", "data": "/nonexistent.jsonl"}), 400
    )

    started = client.post(
        "/v1/models/adapters/train",
        json={"name": "portal-fixes", "collection": "kb", "steps": 8, "rank": 4, "learning_rate": 3e-3},
    )
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "train" and started.json()["stage"] == "train"
    again = client.post("/v1/models/adapters/train", json={"name": "portal-fixes", "collection": "kb"})
    assert_envelope(again, 409, "conflict")

    job = _wait(client, started.json()["job_id"], 600)
    assert job["status"] == "done", job["error"]
    assert job["result"]["adapter"] == "portal-fixes" and job["result"]["steps"] == 8
    assert job["result"]["final_loss"] is not None and job["result"]["examples"] == 1
    progress = [p for stage, p in job["seen"] if stage == "train"]
    assert progress == sorted(progress) and 0 < max(progress) <= 1

    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["portal-fixes"]["kind"] == "adapter" and listed["portal-fixes"]["rank"] == 4
    assert Path(listed["portal-fixes"]["root"], "adapter_model.safetensors").is_file()

    # Not the corrected question itself: that one is answered by the correction, without a model.
    answer = client.post(
        "/v1/ask", json={"collection": "kb", "question": "Which files does the support portal accept?", "model": "portal-fixes"}
    )
    assert answer.status_code == 200, answer.text
    route = answer.json()["route"]
    # The adapter answered, or it was asked and the base model answered after it (fallback names it).
    assert route["model"] == "portal-fixes" or route.get("adapter") == "portal-fixes", route

    # The adapter changed the model: the trained prompt's greedy answer differs from the base model's.
    (line,) = [json.loads(x) for x in client.get("/v1/feedback/export?format=sft").text.splitlines()]
    messages = [ChatMessage(m["role"], m["content"]) for m in line["messages"][:-1]]
    greedy = GenerationParams(temperature=0.0, max_tokens=24)
    base = asyncio.run(services.llm.complete(messages, model=services.router.base_model, params=greedy)).text
    tuned = asyncio.run(services.llm.complete(messages, model="portal-fixes", params=greedy)).text
    assert tuned != base, tuned
    assert_envelope(client.post("/v1/models/adapters/train", json={"name": "portal-fixes", "collection": "kb"}), 409)
