"""Hostile files in the new container formats, through the API: each ends as a 4xx or a failed job with a
reason, and the worker goes on to ingest the next upload."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.api.test_documents_api import upload, wait_for_job
from tests.format_corpus import CORPUS

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>\n"
)
EXTERNAL_ENTITY = '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'


def _sample(filename: str) -> bytes:
    return next(sample.make() for sample in CORPUS if sample.filename == filename)


def _rewritten(data: bytes, member: str, change: Callable[[bytes], bytes]) -> bytes:
    """The ZIP container ``data`` with one member's bytes changed."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == member:
                content = change(content)
            target.writestr(info, content, compress_type=zipfile.ZIP_STORED if info.filename == "mimetype" else None)
    return buffer.getvalue()


def _bomb(_: bytes) -> bytes:
    return b"<a>" + b" " * (600 * 1024 * 1024) + b"</a>"


def _with_doctype(doctype: str, reference: str) -> Callable[[bytes], bytes]:
    def change(xml: bytes) -> bytes:
        body = xml.split(b"?>", 1)[1] if xml.startswith(b"<?xml") else xml
        # The entity is referenced inside the first text run, where a parser that expands it would put it.
        return (doctype.encode() + body).replace(b"<a:t>", b"<a:t>" + reference.encode(), 1).replace(
            b"<w:t>", b"<w:t>" + reference.encode(), 1
        )

    return change


HOSTILE = {
    "bomb.xlsx": lambda: _rewritten(_sample("sales.xlsx"), "xl/worksheets/sheet1.xml", _bomb),
    "bomb.pptx": lambda: _rewritten(_sample("review.pptx"), "ppt/slides/slide2.xml", _bomb),
    "bomb.odt": lambda: _rewritten(_sample("travel.odt"), "content.xml", _bomb),
    "bomb.epub": lambda: _rewritten(_sample("lighthouse.epub"), "EPUB/chap2.xhtml", _bomb),
    "laughs.pptx": lambda: _rewritten(
        _sample("review.pptx"), "ppt/slides/slide2.xml", _with_doctype(BILLION_LAUGHS, "&lol9;")
    ),
    "laughs.docx": lambda: _rewritten(
        _sample("purchasing.docx"), "word/document.xml", _with_doctype(BILLION_LAUGHS, "&lol9;")
    ),
    "secret.pptx": lambda: _rewritten(
        _sample("review.pptx"), "ppt/slides/slide2.xml", _with_doctype(EXTERNAL_ENTITY, "&secret;")
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_container_fails_with_a_reason_and_the_worker_goes_on(client: TestClient, name: str) -> None:
    response = upload(client, "hostile", name, HOSTILE[name]())
    if response.status_code != 202:
        assert 400 <= response.status_code < 500, response.text
    else:
        job = wait_for_job(client, response.json()["job_id"], timeout=120)
        if job["status"] == "failed":
            assert job["error"], job
        else:
            # Parsed without expanding anything: the text holds neither the laughs nor the secret.
            hits = client.post("/v1/retrieve", json={"collection": "hostile", "query": "root lol", "top_k": 20})
            for chunk in hits.json()["chunks"]:
                assert "lollol" not in chunk["text"] and "root:" not in chunk["text"]
    after = upload(client, "hostile", "after.md", b"# After\n\nThe worker is still alive.\n")
    assert wait_for_job(client, after.json()["job_id"], timeout=60)["status"] == "done"
