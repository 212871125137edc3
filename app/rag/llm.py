"""The one interface every chat-model backend implements, and the plain data it takes and returns.

A LoRA adapter is served under its own name: once ``load_adapter`` has made it servable, ``complete`` and
``stream`` take it as ``model`` like the base model's name. Which model answers is decided elsewhere
(``app.rag.routing``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.rag.adapters import AdapterSpec
from app.rag.types import ChatMessage


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    logprobs: bool = False
    # Generation ends before any of these strings, which the answer never contains: a small model that has
    # answered often goes on to write the template's next "Question:" line itself.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    finish_reason: str
    model: str
    token_logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class StreamDelta:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    usage: Usage
    finish_reason: str
    model: str


StreamEvent = StreamDelta | StreamEnd


class ChatModel(Protocol):
    @property
    def default_model(self) -> str: ...

    def warm_up(self) -> None:
        """Make the first answer as fast as the next (blocking; run off the event loop): a local model
        prepares and loads its weights; a remote one has nothing to do."""
        ...

    async def check(self) -> str | None:
        """Can the model answer now? None when it can, else what is wrong in a few words (``/readyz``): a local
        model is loaded; a remote server answers and serves the model."""
        ...

    def base_projection_shapes(self) -> dict[str, tuple[int, int]] | None:
        """(in, out) features of the base model's projections when its architecture is known here (a local
        model's config.json), so that an adapter made for another model is refused before loading."""
        ...

    async def load_adapter(self, adapter: AdapterSpec) -> None:
        """Make the adapter servable under its name; returns at once when it already is. Raises
        ``AdapterUnavailableError`` with the backend's reason."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Stop serving the adapter; nothing happens when it is not loaded."""
        ...

    async def context_window(self, model: str) -> int:
        """Tokens the model reads and writes in one call: prompt plus completion."""
        ...

    async def count_tokens(self, messages: Sequence[ChatMessage], model: str) -> int:
        """Prompt tokens of ``messages`` after the model's own chat template."""
        ...

    async def complete(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        """Deltas, then exactly one StreamEnd. Closing the generator early (aclose) cancels the generation."""
        ...
