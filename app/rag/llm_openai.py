"""Chat through any OpenAI-compatible server, vLLM first, with the official async ``openai`` client.

Token counts come from the server's own tokenizer where it offers one (vLLM's ``POST /tokenize`` with
``messages`` applies the chat template, and reports ``max_model_len``); the context window comes from
``GET /v1/models`` (vLLM reports ``max_model_len`` per model) unless configured.

LoRA adapters are served by the server under their names. ``load_adapter`` finds an adapter among the
server's models (started with ``--lora-modules NAME=DIR``) or loads it through vLLM's
``POST /v1/load_lora_adapter`` (allowed when the server runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
The adapter's directory must be readable by the server at the same path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from app.rag.adapters import AdapterSpec
from app.rag.errors import (
    AdapterUnavailableError,
    InvalidInputError,
    NotFoundError,
    UpstreamBadResponseError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from app.rag.llm import Completion, GenerationParams, StreamDelta, StreamEnd, StreamEvent, Usage
from app.rag.types import ChatMessage

logger = logging.getLogger(__name__)

# When a server can neither count tokens nor report its window, these keep packing on the safe side.
FALLBACK_CONTEXT_WINDOW = 4096
FALLBACK_CHARS_PER_TOKEN = 1.5
# Seconds /readyz waits for the model server to list its models.
_CHECK_SECONDS = 3.0


def _wire(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def translate_upstream_error(error: Exception) -> Exception:
    """The typed error for a failed upstream call; its message never carries the upstream's body."""
    if isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
        return UpstreamTimeoutError("the model server did not answer in time")
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):
        return UpstreamUnavailableError("the model server cannot be reached")
    if isinstance(error, openai.NotFoundError):
        return NotFoundError("the model server does not serve this model", param="model")
    if isinstance(error, openai.BadRequestError):
        return InvalidInputError(
            "the model server refused the request (is the prompt too long?)", param="model"
        )
    if isinstance(error, openai.APIStatusError):
        if error.status_code in (429, 503):
            return UpstreamUnavailableError(
                f"the model server is overloaded or unavailable ({error.status_code})"
            )
        return UpstreamBadResponseError(f"the model server failed ({error.status_code})")
    if isinstance(error, openai.APIResponseValidationError | ValueError | KeyError | TypeError):
        return UpstreamBadResponseError("the model server sent a response wenda cannot read")
    return error


def _names_the_model(response: httpx.Response) -> bool:
    """A 404 in the OpenAI error shape about the request's model (as opposed to a route the server lacks)."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("param") == "model"


def _server_message(response: httpx.Response) -> str:
    """The model server's own short explanation (vLLM's error message), for the operator registering an
    adapter: it names the server-side problem (a missing file, a rank above --max-lora-rank)."""
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else None
        message = message or body.get("message") or body.get("detail")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text)[:300]


class OpenAIChatModel:
    def __init__(
        self,
        *,
        base_url: str,
        default_model: str,
        api_key: str = "",
        timeout_seconds: float = 120.0,
        max_retries: int = 2,
        context_window: int | None = None,
    ) -> None:
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_seconds,
            max_retries=max_retries,
        )
        # The server root (vLLM serves /tokenize beside /v1).
        self._root = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.AsyncClient(timeout=timeout_seconds)
        self._default_model = default_model
        self._configured_window = context_window
        self._windows: dict[str, int] = {}
        self._can_tokenize = True
        self._adapters_served: set[str] = set()

    @property
    def default_model(self) -> str:
        return self._default_model

    def warm_up(self) -> None:
        """Nothing to load here: the server holds the model (whether it answers is its own readiness)."""

    async def check(self) -> str | None:
        # The client's own request (with its key), but short and once: a probe must answer within seconds.
        quick = self._client.with_options(timeout=_CHECK_SECONDS, max_retries=0)
        try:
            served = {entry.id for entry in (await quick.models.list()).data}
        except Exception as error:
            return f"{translate_upstream_error(error)} ({self._root}, listing its models)"
        if self._default_model not in served:
            return f"the model server does not serve {self._default_model} (it serves {', '.join(sorted(served))})"
        return None

    def base_projection_shapes(self) -> dict[str, tuple[int, int]] | None:
        return None  # the server checks an adapter's shapes when it loads it

    async def _served_models(self) -> set[str]:
        try:
            listing = await self._client.models.list()
        except Exception as error:
            raise translate_upstream_error(error) from error
        return {entry.id for entry in listing.data}

    async def load_adapter(self, adapter: AdapterSpec) -> None:
        if adapter.name in self._adapters_served:
            return
        if adapter.name in await self._served_models():
            self._adapters_served.add(adapter.name)
            return
        try:
            response = await self._http.post(
                f"{self._root}/v1/load_lora_adapter",
                json={"lora_name": adapter.name, "lora_path": adapter.path},
            )
        except httpx.HTTPError as error:
            raise translate_upstream_error(error) from error
        if response.status_code in (404, 405):
            raise AdapterUnavailableError(
                f"the model server does not serve adapter {adapter.name!r} and does not load adapters at run "
                f"time: start vLLM with --enable-lora --lora-modules {adapter.name}={adapter.path}, or with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if response.status_code != 200 and "already" not in response.text.lower():
            raise AdapterUnavailableError(
                f"the model server did not load adapter {adapter.name!r} ({response.status_code}): "
                f"{_server_message(response)}"
            )
        self._adapters_served.add(adapter.name)
        logger.info("model server loaded adapter %s from %s", adapter.name, adapter.path)

    async def unload_adapter(self, name: str) -> None:
        self._adapters_served.discard(name)
        try:
            response = await self._http.post(f"{self._root}/v1/unload_lora_adapter", json={"lora_name": name})
        except httpx.HTTPError as error:
            logger.warning("could not ask the model server to unload adapter %s: %s", name, error)
            return
        if response.status_code != 200:
            # Adapters given with --lora-modules stay until the server restarts; requests no longer name them.
            logger.info("model server kept adapter %s (%s)", name, response.status_code)

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def context_window(self, model: str) -> int:
        if self._configured_window:
            return self._configured_window
        if model not in self._windows:
            try:
                listing = await self._client.models.list()
            except Exception as error:
                raise translate_upstream_error(error) from error
            for entry in listing.data:
                length = (entry.model_extra or {}).get("max_model_len")
                if isinstance(length, int) and length > 0:
                    self._windows[entry.id] = length
            if model not in self._windows:
                logger.warning(
                    "model server reports no window for %s; assuming %d", model, FALLBACK_CONTEXT_WINDOW
                )
                self._windows[model] = FALLBACK_CONTEXT_WINDOW
        return self._windows[model]

    async def count_tokens(self, messages: Sequence[ChatMessage], model: str) -> int:
        if self._can_tokenize:
            try:
                response = await self._http.post(
                    f"{self._root}/tokenize", json={"model": model, "messages": _wire(messages)}
                )
            except httpx.HTTPError as error:
                raise translate_upstream_error(error) from error
            if response.status_code == 200:
                try:
                    return int(response.json()["count"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("model server's /tokenize answers in another format; estimating instead")
                    self._can_tokenize = False
            elif response.status_code in (404, 405):
                if _names_the_model(response):
                    # vLLM answers 404 for a model it does not serve: a configuration error, not a missing route.
                    raise NotFoundError("the model server does not serve this model", param="model")
                logger.warning("model server has no /tokenize; estimating prompt tokens from characters")
                self._can_tokenize = False
            else:
                raise UpstreamBadResponseError(
                    f"the model server failed to count tokens ({response.status_code})"
                )
        characters = sum(len(m.content) + 8 for m in messages)
        return int(characters / FALLBACK_CHARS_PER_TOKEN) + 1

    def _request(
        self, messages: Sequence[ChatMessage], model: str, params: GenerationParams
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": _wire(messages),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.logprobs:
            request["logprobs"] = True
        if params.stop:
            request["stop"] = list(params.stop)  # the server leaves the stop string out of the answer
        return request

    async def complete(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> Completion:
        try:
            response = await self._client.chat.completions.create(**self._request(messages, model, params))
            choice = response.choices[0]
            text = choice.message.content
            if not isinstance(text, str):
                raise TypeError("no message content")
            logprobs = None
            if choice.logprobs is not None and choice.logprobs.content:
                logprobs = tuple(float(token.logprob) for token in choice.logprobs.content)
            usage = response.usage
            return Completion(
                text=text,
                usage=Usage(usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0),
                finish_reason=str(choice.finish_reason or "stop"),
                model=response.model or model,
                token_logprobs=logprobs,
            )
        except Exception as error:
            raise self._failed(error, model) from error

    def _failed(self, error: Exception, model: str) -> Exception:
        translated = translate_upstream_error(error)
        if isinstance(translated, NotFoundError):
            # The server lost the adapter (restarted?): the next load_adapter looks for it again.
            self._adapters_served.discard(model)
        return translated

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        try:
            upstream = await self._client.chat.completions.create(
                **self._request(messages, model, params), stream=True, stream_options={"include_usage": True}
            )
        except Exception as error:
            raise self._failed(error, model) from error
        usage = Usage(0, 0)
        finish_reason = "stop"
        served_model = model
        try:
            async for chunk in upstream:
                served_model = chunk.model or served_model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield StreamDelta(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = str(choice.finish_reason)
        except Exception as error:
            raise translate_upstream_error(error) from error
        finally:
            # Closing the response drops the connection, which is how vLLM learns to abort the request
            # when our own client went away.
            await upstream.close()
        yield StreamEnd(usage=usage, finish_reason=finish_reason, model=served_model)
