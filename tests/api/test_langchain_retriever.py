"""The LangChain retriever against a real wenda HTTP server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from app.integrations.langchain import WendaRetrievalError, WendaRetriever
from tests.api.test_documents_api import wait_for_job


def test_retriever_returns_langchain_documents(live_url: str) -> None:
    import httpx

    with httpx.Client(base_url=live_url) as http:
        job = http.post(
            "/v1/collections/lc/documents",
            files={"file": ("ops.md", "# 网络\n\n静态地址写在 /etc/network/interfaces 文件中。".encode())},
        )
        assert job.status_code == 202
        assert wait_for_job(http, job.json()["job_id"])["status"] == "done"

    retriever = WendaRetriever(base_url=live_url, collection="lc", top_k=3)
    documents = retriever.invoke("静态地址 interfaces")
    assert documents and documents[0].metadata["source"] == "ops.md"
    assert "interfaces" in documents[0].page_content
    assert asyncio.run(retriever.ainvoke("静态地址"))[0].metadata["source"] == "ops.md"

    with pytest.raises(WendaRetrievalError, match="404"):
        WendaRetriever(base_url=live_url, collection="missing").invoke("x")
