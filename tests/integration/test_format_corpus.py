"""Every format we read, end to end: uploaded, parsed in the limited child process, chunked, embedded with
the real model, and its fact found by /v1/retrieve in the top 3, in the right section."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.components import build_components
from app.main import create_app
from app.rag.filetypes import libreoffice
from tests.conftest import make_settings
from tests.format_corpus import CORPUS, Sample

pytestmark = pytest.mark.integration

COLLECTION = "formats"


def _available(sample: Sample) -> bool:
    # Old Word and PowerPoint files need LibreOffice; their refusal without it is tested in test_formats_legacy.
    return libreoffice() is not None or not sample.filename.endswith((".doc", ".ppt"))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, dict[str, Any]]]]:
    settings = make_settings(Path(tmp_path_factory.mktemp("formats")) / "data", worker={"poll_seconds": 0.05})
    services = build_components(settings)
    with TestClient(create_app(components=services)) as client:
        jobs: dict[str, int] = {}
        for sample in CORPUS:
            if not _available(sample):
                continue
            response = client.post(
                f"/v1/collections/{COLLECTION}/documents", files={"file": (sample.filename, sample.make())}
            )
            assert response.status_code == 202, (sample.filename, response.text)
            jobs[sample.filename] = response.json()["job_id"]
        deadline = time.monotonic() + 600
        finished: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(finished) < len(jobs):
            for name, job_id in jobs.items():
                if name not in finished:
                    job = client.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("done", "failed"):
                        finished[name] = job
            time.sleep(0.2)
        failed = {name: job["error"] for name, job in finished.items() if job["status"] != "done"}
        assert not failed, failed
        assert len(finished) == len(jobs), "ingestion did not finish in 10 minutes"
        documents = client.get(f"/v1/collections/{COLLECTION}/documents").json()["documents"]
        yield client, {document["filename"]: document for document in documents}
    services.worker.stop()
    services.close_database()


@pytest.mark.parametrize("sample", CORPUS, ids=[sample.filename for sample in CORPUS])
def test_each_format_finds_its_fact_in_the_top_three_in_its_section(
    ingested: tuple[TestClient, dict[str, dict[str, Any]]], sample: Sample
) -> None:
    client, documents = ingested
    if sample.filename not in documents:
        pytest.skip("LibreOffice is not installed")
    hits = client.post(
        "/v1/retrieve", json={"collection": COLLECTION, "query": sample.question, "top_k": 3}
    ).json()["chunks"]
    found = [hit for hit in hits if hit["source"] == sample.filename and sample.fact in hit["text"]]
    assert found, [(hit["source"], hit["section"], hit["text"][:80]) for hit in hits]
    assert found[0]["section"] == sample.section


def test_the_document_says_which_pages_were_read_by_ocr_and_what_a_mail_says_of_itself(
    ingested: tuple[TestClient, dict[str, dict[str, Any]]],
) -> None:
    _, documents = ingested
    assert documents["notice.png"]["ocr_pages"] == [1]
    assert documents["notice.png"]["file_type"] == "image"
    assert documents["guide.md"]["ocr_pages"] == []
    mail = documents["move.eml"]
    assert mail["file_type"] == "eml"
    assert mail["properties"]["Subject"] == "机房搬迁通知"
    assert "lina@example.com" in mail["properties"]["From"]
