"""A LangChain retriever backed by a running wenda server, for dropping wenda into existing chains.

from app.integrations.langchain import WendaRetriever
retriever = WendaRetriever(base_url="http://127.0.0.1:8000", collection="ops", top_k=5)
docs = retriever.invoke("粘滞位有什么作用？")
"""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field


class WendaRetrievalError(RuntimeError):
    """The wenda server answered with an error envelope or could not be reached."""


class WendaRetriever(BaseRetriever):
    base_url: str = "http://127.0.0.1:8000"
    collection: str
    top_k: int = 5
    mode: str | None = None
    timeout: float = 30.0
    headers: dict[str, str] = Field(default_factory=dict)

    def _payload(self, query: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"collection": self.collection, "query": query, "top_k": self.top_k}
        if self.mode:
            payload["mode"] = self.mode
        return payload

    @staticmethod
    def _documents(response: httpx.Response) -> list[Document]:
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise WendaRetrievalError(f"wenda answered {response.status_code}: {message}")
        return [
            Document(
                page_content=chunk["text"],
                metadata={
                    key: chunk[key]
                    for key in ("chunk_id", "document_id", "source", "score", "start", "end", "section")
                    if key in chunk
                },
            )
            for chunk in response.json()["chunks"]
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=self.headers) as client:
            return self._documents(client.post("/v1/retrieve", json=self._payload(query)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=self.headers
        ) as client:
            return self._documents(await client.post("/v1/retrieve", json=self._payload(query)))
