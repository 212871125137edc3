"""Fakes for unit and API tests: an embedder and a chat model, deterministic and instant."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator, Sequence

import numpy as np

from app.rag.adapters import AdapterSpec
from app.rag.embedding import Vectors
from app.rag.llm import Completion, GenerationParams, StreamDelta, StreamEnd, StreamEvent, Usage
from app.rag.types import ChatMessage

_PIECE = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")


class FakeEmbedder:
    """Hashes words (and single CJK characters) into a small vector: shared words mean similar vectors."""

    name = "fake/hashing-64"
    dim = 64
    max_tokens = 512

    def __init__(self) -> None:
        self.passage_calls: list[int] = []

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for piece in _PIECE.findall(text.lower()):
            slot = (
                int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=4).digest(), "little") % self.dim
            )
            vector[slot] += 1.0
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        self.passage_calls.append(len(texts))
        return self.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return len(_PIECE.findall(text.lower())) + 2


class FakeChatModel:
    """Answers by quoting the first sentence of passage 1 with a [1] marker — or by refusing when the
    passages do not share a word with the question. Counts a token per 2 characters; records every call."""

    default_model = "fake-model"

    def warm_up(self) -> None:
        self.warmed_up = True

    async def check(self) -> str | None:
        return self.problem

    def __init__(
        self,
        *,
        window: int = 4096,
        refusal_zh: str = "文档中没有找到这个问题的答案。",
        refusal_en: str = "The documents do not contain the answer to this question.",
    ) -> None:
        self.window = window
        self.calls: list[list[ChatMessage]] = []
        self.models_called: list[str] = []
        self.refusals = (refusal_zh, refusal_en)
        self.cancelled = False
        self.adapters_loaded: dict[str, str] = {}
        self.problem: str | None = None  # what check() reports: set it to make the backend look down

    def base_projection_shapes(self) -> dict[str, tuple[int, int]] | None:
        return None

    async def load_adapter(self, adapter: AdapterSpec) -> None:
        self.adapters_loaded[adapter.name] = adapter.path

    async def unload_adapter(self, name: str) -> None:
        self.adapters_loaded.pop(name, None)

    async def context_window(self, model: str) -> int:
        return self.window

    async def count_tokens(self, messages: Sequence[ChatMessage], model: str) -> int:
        return sum(len(m.content) + 4 for m in messages) // 2

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        user = messages[-1].content
        question = user.rsplit("\n", 1)[-1]
        if "[1]" not in user:
            return self.refusals[1]
        block = user.split("[1]", 1)[1].split("\n[2]", 1)[0].split("\n")[1:]
        passage = max(block, key=len)
        shared = set(_PIECE.findall(question.lower())) & set(_PIECE.findall(passage.lower()))
        if len(shared) < 2:
            return self.refusals[0] if re.search(r"[\u3400-\u9fff]", question) else self.refusals[1]
        first = re.split(r"(?<=[。.!?！？])", passage.strip())[0]
        return (
            f"{first.rstrip('。.')} [1]。"
            if re.search(r"[\u3400-\u9fff]", first)
            else f"{first.rstrip('.')} [1]."
        )

    async def complete(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> Completion:
        self.calls.append(list(messages))
        self.models_called.append(model)
        text = self._reply(messages)
        prompt = await self.count_tokens(messages, model)
        return Completion(text=text, usage=Usage(prompt, len(text) // 2), finish_reason="stop", model=model)

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        completion = await self.complete(messages, model=model, params=params)
        try:
            for i in range(0, len(completion.text), 4):
                await asyncio.sleep(0)
                yield StreamDelta(completion.text[i : i + 4])
        except GeneratorExit:
            self.cancelled = True
            raise
        yield StreamEnd(usage=completion.usage, finish_reason="stop", model=model)


class ScriptedChatModel(FakeChatModel):
    """Gives the same answer to every question, optionally slowly: for tests of what happens to a given answer
    (its check, its record, a slow stream's keep-alives)."""

    def __init__(self, reply: str, *, seconds_per_delta: float = 0.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reply = reply
        self.seconds_per_delta = seconds_per_delta

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        return self.reply

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        completion = await self.complete(messages, model=model, params=params)
        try:
            for i in range(0, len(completion.text), 4):
                await asyncio.sleep(self.seconds_per_delta)
                yield StreamDelta(completion.text[i : i + 4])
        except (GeneratorExit, asyncio.CancelledError):
            # Closed by its consumer, or its task cancelled when the client went away: both stop generation.
            self.cancelled = True
            raise
        yield StreamEnd(usage=completion.usage, finish_reason="stop", model=model)
