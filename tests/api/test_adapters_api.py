"""The model registry and routing over HTTP, against a real OpenAI-compatible server on loopback
(tests/upstream.py) that serves LoRA adapters by name the way vLLM does and is made to fail per adapter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.components import build_components
from app.config import Settings
from app.main import create_app
from app.rag.llm_openai import OpenAIChatModel
from tests.adapters import write_adapter
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.fakes import FakeEmbedder
from tests.upstream import UpstreamState, running_upstream

GIT = "# Branches\n\nA branch in Git is a movable pointer to a commit. Run git branch to list branches.\n"
PERMISSIONS = "# 粘滞位\n\n给目录设置粘滞位后，只有文件的属主才能删除或重命名其中的文件。\n"
ASK = {"collection": "git", "question": "How do I list branches in Git?"}


@contextmanager
def serving(settings: Settings, state_setup: Any = None) -> Iterator[tuple[TestClient, UpstreamState]]:
    with running_upstream() as (url, state):
        if state_setup:
            state_setup(state)
        llm = OpenAIChatModel(base_url=url, default_model="ok", timeout_seconds=3.0, max_retries=0)
        services = build_components(settings, embedder=FakeEmbedder(), llm=llm)
        with TestClient(create_app(components=services)) as client:
            for collection, name, text in (("git", "git.md", GIT), ("perm", "perm.md", PERMISSIONS)):
                job = upload(client, collection, name, text.encode()).json()["job_id"]
                assert wait_for_job(client, job)["status"] == "done"
            yield client, state
        services.engine.dispose()


def register(client: TestClient, tmp_path: Path, name: str, **adapter: Any) -> Any:
    directory = write_adapter(tmp_path / "adapters" / name, **adapter)
    return client.post("/v1/models/adapters", json={"name": name, "path": str(directory)})


def models_by_id(client: TestClient) -> dict[str, dict[str, Any]]:
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    return {entry["id"]: entry for entry in listing["data"]}


def test_registration_checks_the_adapter_against_the_base_model(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, lambda state: state.adapters.add("static")) as (client, state):
        created = register(client, tmp_path, "static")
        assert created.status_code == 201, created.text
        listed = models_by_id(client)
        assert listed["ok"]["parent"] is None and listed["ok"]["kind"] == "base"
        assert listed["static"]["parent"] == "ok" and listed["static"]["status"] == "ready"
        assert listed["static"]["rank"] == 4 and listed["static"]["target_modules"] == ["q_proj", "v_proj"]

        # Not served, and the server does not load adapters at run time.
        refused = assert_envelope(register(client, tmp_path, "dynamic"), 422, "adapter_rejected")
        assert "run time" in refused["message"] and "--lora-modules dynamic=" in refused["message"]
        state.runtime_lora = True
        assert register(client, tmp_path, "dynamic").status_code == 201
        assert state.loads[-1]["lora_name"] == "dynamic"
        assert_envelope(register(client, tmp_path, "dynamic"), 409, "conflict")

        other = assert_envelope(register(client, tmp_path, "llama", base_model="meta-llama/Llama-3.2-1B"), 422)
        assert "meta-llama/Llama-3.2-1B" in other["message"] and "'ok'" in other["message"]
        assert "rank 16" in assert_envelope(register(client, tmp_path, "wide", rank=16), 422)["message"]
        assert "embed_tokens" in assert_envelope(register(client, tmp_path, "emb", targets=["embed_tokens"]), 422)[
            "message"
        ]
        assert "LORA" in assert_envelope(register(client, tmp_path, "ia3", peft_type="IA3"), 422)["message"]
        corrupt = write_adapter(tmp_path / "adapters" / "corrupt")
        weights = corrupt / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        cut = client.post("/v1/models/adapters", json={"name": "corrupt", "path": str(corrupt)})
        assert "corrupt" in assert_envelope(cut, 422, "adapter_rejected")["message"]
        missing = client.post("/v1/models/adapters", json={"name": "nowhere", "path": str(tmp_path / "nowhere")})
        assert assert_envelope(missing, 422)["param"] == "path"
        relative = client.post("/v1/models/adapters", json={"name": "rel", "path": "adapters/x"})
        assert "absolute" in assert_envelope(relative, 422)["message"]
        assert_envelope(register(client, tmp_path, "auto"), 422)
        assert_envelope(client.post("/v1/models/adapters", json={"name": "x"}), 422)
        assert set(models_by_id(client)) == {"ok", "static", "dynamic"}

        assert client.delete("/v1/models/adapters/dynamic").status_code == 204
        assert set(models_by_id(client)) == {"ok", "static"}
        assert_envelope(client.delete("/v1/models/adapters/dynamic"), 404)
        unknown = assert_envelope(client.post("/v1/ask", json={**ASK, "model": "dynamic"}), 404)
        assert unknown["param"] == "model"


def _route(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/ask", json={**ASK, **overrides})
    assert response.status_code == 200, response.text
    body = response.json()
    return {**body["route"], "grounded": body["grounded"], "answered_by": body["model"], "query_id": body["query_id"]}


def test_every_fallback_cause_and_the_circuit_breaker(settings: Settings, tmp_path: Path) -> None:
    settings.models.adapter_timeout_seconds = 0.5
    settings.models.breaker_failures = 2
    settings.models.breaker_reset_seconds = 1.0
    served = {"good", "slow", "down", "garbage", "missing", "unsure"}
    with serving(settings, lambda state: state.adapters.update(served)) as (client, state):
        for name in sorted(served):
            assert register(client, tmp_path, name).status_code == 201

        good = _route(client, model="good")
        assert (good["model"], good["reason"], good["answered_by"], good["grounded"]) == ("good", "request", "good", True)
        for adapter, cause in [
            ("slow", "timeout"),
            ("down", "upstream_error"),
            ("garbage", "malformed"),
            ("missing", "not_loaded"),
            ("unsure", "low_confidence"),
        ]:
            labels = {"adapter": adapter, "cause": cause}
            counted = REGISTRY.get_sample_value("wenda_model_fallbacks_total", labels) or 0.0
            route = _route(client, model=adapter)
            assert (route["reason"], route["cause"], route["adapter"]) == ("fallback", cause, adapter), route
            assert route["answered_by"] == "ok" and route["grounded"], route  # no request lost
            assert REGISTRY.get_sample_value("wenda_model_fallbacks_total", labels) == counted + 1
        # An unsupported answer by the adapter: the base model gets the question too.
        unsupported = _route(client, model="good", collection="perm", question="粘滞位有什么作用？")
        assert (unsupported["reason"], unsupported["cause"]) == ("fallback", "unsupported")

        # A stream falls back before its first token; the route comes with the last event.
        streamed = client.post("/v1/ask", json={**ASK, "model": "down", "stream": True})
        done = [line for line in streamed.text.splitlines() if line.startswith("data: ")][-1]
        assert '"cause": "down"' not in done and '"reason": "fallback"' in done and '"grounded": true' in done

        # Two failures in a row opened down's breaker: it gets no traffic, and says so.
        listed = models_by_id(client)["down"]
        assert (listed["status"], listed["breaker"]) == ("unavailable", "open")
        assert "down" in client.get("/readyz").json()["checks"]["adapters"]
        sent_before = sum(1 for r in state.requests if r["model"] == "down")
        skipped = _route(client, model="down")
        assert (skipped["cause"], skipped["answered_by"]) == ("breaker_open", "ok")
        assert sum(1 for r in state.requests if r["model"] == "down") == sent_before
        # It recovers; after the reset time one request probes it and closes the breaker.
        state.healthy.add("down")
        time.sleep(1.1)
        probe = _route(client, model="down")
        assert (probe["reason"], probe["answered_by"]) == ("request", "down")
        assert models_by_id(client)["down"]["breaker"] == "closed"

        # The chat endpoint carries the route too, and the answer record keeps it.
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "slow", "collection": "git", "messages": [{"role": "user", "content": ASK["question"]}]},
        ).json()
        assert chat["route"]["cause"] == "timeout" and chat["model"] == "ok"
        record = client.get(f"/v1/queries/{chat['query_id']}").json()
        assert record["route"]["cause"] == "timeout" and record["model"] == "ok"


def test_collection_default_model_and_a_lost_runtime_adapter(settings: Settings, tmp_path: Path) -> None:
    def setup(state: UpstreamState) -> None:
        state.runtime_lora = True

    with serving(settings, setup) as (client, state):
        assert register(client, tmp_path, "dyn").status_code == 201
        patched = client.patch("/v1/collections/git", json={"default_model": "dyn"})
        assert patched.status_code == 200 and patched.json()["default_model"] == "dyn"
        assert _route(client)["reason"] == "collection" and _route(client)["answered_by"] == "dyn"
        # The request's own choice wins over the collection's.
        assert _route(client, model="ok")["answered_by"] == "ok"
        assert_envelope(client.patch("/v1/collections/git", json={"default_model": "nope"}), 404)
        assert_envelope(client.patch("/v1/collections/none", json={"default_model": None}), 404)

        # The server restarted without the runtime-loaded adapter: the base answers, and the next request
        # loads the adapter again.
        state.forget("dyn")
        lost = _route(client)
        assert (lost["cause"], lost["answered_by"]) == ("not_loaded", "ok")
        assert _route(client)["answered_by"] == "dyn"
        assert len([load for load in state.loads if load["lora_name"] == "dyn"]) == 2

        # Removing the adapter clears it as the collection's default: routing decides again.
        assert client.delete("/v1/models/adapters/dyn").status_code == 204
        collections = {c["name"]: c for c in client.get("/v1/collections").json()["collections"]}
        assert collections["git"]["default_model"] is None
        assert _route(client)["reason"] == "auto" and _route(client)["answered_by"] == "ok"


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_compare_answers_with_both_models_over_http(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, lambda state: state.adapters.update({"good", "down"})) as (client, state):
        for name in ("good", "down"):
            assert register(client, tmp_path, name).status_code == 201
        before = len(state.requests)
        both = _route(client, model="good", compare=True)
        # Both models were asked; their answers are equally supported here, so the adapter's stands.
        assert {r["model"] for r in state.requests[before:] if "messages" in r} >= {"good", "ok"}
        assert (both["model"], both["reason"]) == ("good", "request")
        assert set(both["compare"]) == {"good", "ok"} and both["compare"]["good"] == both["compare"]["ok"]
        down = _route(client, model="down", compare=True)
        assert (down["model"], down["cause"], down["compare"]["down"]) == ("ok", "upstream_error", None)
        streamed = client.post("/v1/ask", json={**ASK, "model": "good", "compare": True, "stream": True})
        assert assert_envelope(streamed, 400)["param"] == "compare"
