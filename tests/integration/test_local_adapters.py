"""LoRA adapters on the embedded model for real: rank-4 PEFT adapters of the bundled Qwen2.5-Coder-0.5B made
here, registered through the API (checked against the base model), and served per request by PEFT on the one
loaded base model."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.llm import GenerationParams
from app.rag.llm_local import LocalChatModel
from app.rag.types import ChatMessage
from tests.adapters import copy_for_other_base, make_peft_adapter, write_adapter
from tests.api.test_documents_api import assert_envelope
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

MESSAGES = [ChatMessage("system", "You are terse."), ChatMessage("user", "Name the command that lists Git branches.")]
GREEDY = GenerationParams(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def adapters(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    valid = make_peft_adapter(bundled_model_dir, root / "valid", seed=1)
    second = make_peft_adapter(bundled_model_dir, root / "second", seed=2)
    other_base = copy_for_other_base(valid, root / "other-base")
    corrupt = root / "corrupt"
    shutil.copytree(valid, corrupt)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 1000])
    # Named for our base, but shaped for a model 64 wide: made for another model.
    misshapen = write_adapter(root / "misshapen", base_model=str(bundled_model_dir), hidden=64)
    return {"valid": valid, "second": second, "other-base": other_base, "corrupt": corrupt, "misshapen": misshapen}


@pytest.fixture(scope="module")
def served(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, LocalChatModel]]:
    settings = make_settings(tmp_path_factory.mktemp("data"), llm={"local_model_dir": bundled_model_dir})
    llm = LocalChatModel(model_dir=bundled_model_dir, prepare=False, threads=1)
    services = build_components(settings, embedder=FakeEmbedder(), llm=llm)
    with TestClient(create_app(components=services)) as client:
        yield client, llm
    services.engine.dispose()


def test_registration_accepts_a_peft_adapter_and_names_each_mismatch(
    served: tuple[TestClient, LocalChatModel], adapters: dict[str, Path]
) -> None:
    client, _llm = served

    def register(name: str, directory: Path) -> object:
        return client.post("/v1/models/adapters", json={"name": name, "path": str(directory), "description": "git"})

    created = register("valid", adapters["valid"])
    assert created.status_code == 201, created.text  # type: ignore[attr-defined]
    assert created.json()["parent"] == "qwen2.5-coder-0.5b-instruct"  # type: ignore[attr-defined]
    other = assert_envelope(register("other", adapters["other-base"]), 422, "adapter_rejected")
    assert "meta-llama/Llama-3.2-1B" in other["message"]
    corrupt = assert_envelope(register("corrupt", adapters["corrupt"]), 422, "adapter_rejected")
    assert "corrupt" in corrupt["message"]
    misshapen = assert_envelope(register("misshapen", adapters["misshapen"]), 422, "adapter_rejected")
    assert "another model" in misshapen["message"] and "896" in misshapen["message"]
    assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"qwen2.5-coder-0.5b-instruct", "valid"}


def test_adapters_change_greedy_output_and_switch_per_request(
    served: tuple[TestClient, LocalChatModel], adapters: dict[str, Path]
) -> None:
    client, llm = served
    assert client.post("/v1/models/adapters", json={"name": "second", "path": str(adapters["second"])}).status_code == 201
    if "valid" not in {m["id"] for m in client.get("/v1/models").json()["data"]}:
        assert client.post("/v1/models/adapters", json={"name": "valid", "path": str(adapters["valid"])}).status_code == 201
    base_model = llm.default_model

    async def generate(model: str) -> str:
        return (await llm.complete(MESSAGES, model=model, params=GREEDY)).text

    async def run() -> list[str]:
        return [await generate(m) for m in (base_model, "valid", base_model, "second", "valid")]

    base, valid, base_again, second, valid_again = asyncio.run(run())
    assert valid != base and second != base and second != valid, (base, valid, second)
    # Switching is per request, on the one base model: the base answers as before, each adapter the same.
    assert base_again == base and valid_again == valid

    # Removing one leaves the other served; removing the last returns to the plain model.
    assert client.delete("/v1/models/adapters/second").status_code == 204
    assert asyncio.run(generate("valid")) == valid
    assert client.delete("/v1/models/adapters/valid").status_code == 204
    assert asyncio.run(generate(base_model)) == base
