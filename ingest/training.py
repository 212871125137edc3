"""LoRA fine-tuning of the base model on a chat SFT file: TRL's ``SFTTrainer`` with a PEFT ``LoraConfig``.

The data is JSONL, one ``{"messages": [{"role": ..., "content": ...}, ...]}`` per line, ending on an
assistant message (``check_sft_file``). The result is the directory PEFT's ``save_pretrained`` writes
(``adapter_config.json`` naming the base model folder, ``adapter_model.safetensors``): what
``app.rag.adapters.inspect_adapter`` checks, ``LocalChatModel`` loads and vLLM's ``--lora-modules`` serves.
It is trained in a hidden folder beside the output and renamed into place only when training succeeded.

Which tokens carry the loss: the assistant turns only. TRL 1.x does this with ``assistant_only_loss=True``,
which needs ``{% generation %}`` markers in the chat template; Qwen2.5's template has none, but TRL ships a
training copy of it (and of other families' templates) with the markers, and ``SFTTrainer`` swaps it in by
itself (``trl.chat_template_utils.get_training_chat_template``; the rendered text is unchanged, and the mask
covers each answer with its ``<|im_end|>``, so the model learns to stop). For a base model whose template
TRL can neither use nor patch, each example becomes a conversational prompt-completion pair (every message
but the last, then the last), which TRL masks to the completion by default: the loss is then on the last
assistant message only, and earlier assistant turns are context. Full-sequence loss is never used: it would
spend the few steps a job has on learning to reproduce the questions.

On the CPU the weights train in float32 (TRL's default of bf16 mixed precision is switched off), without
gradient checkpointing (the sequences are short), evaluation, checkpoints or reporting.

``run_training`` is what the job worker calls: it runs ``python -m ingest.training <request.json>`` and
relays its progress, so that training's memory goes back to the system when the child exits and a stuck or
cancelled run can be killed. The child writes one JSON line per event on its stdout (its own and the
libraries' prints go to its stderr instead): ``{"event": "progress", "fraction", "metrics"}`` after each
step, then ``{"event": "result", ...}`` or ``{"event": "error", "message"}``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from app.rag.adapters import SUPPORTED_TARGET_MODULES
from app.rag.errors import WendaError
from app.rag.llm_local import MODEL_CONSTRUCTION_LOCK
from app.rag.training_data import check_sft_file, read_examples

logger = logging.getLogger(__name__)

Progress = Callable[[float, dict[str, float]], None]

# How many of the child's last stderr lines a failure carries, and how long each may be.
_STDERR_TAIL_LINES = 20
_STDERR_LINE_CHARS = 500
# How often the parent looks at the cancel event and the clock while the child is quiet.
_POLL_SECONDS = 0.2
# A protocol line is a few hundred bytes; anything this long is not ours.
_MAX_PROTOCOL_LINE_BYTES = 1 << 20


class TrainingFailedError(RuntimeError):
    """The training child failed. ``message``: its error when it could report one, else how it ended;
    ``str()`` adds its last stderr lines."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: tuple[str, ...]) -> None:
        detail = "\n".join(stderr_tail)
        super().__init__(f"{message}\n{detail}" if detail else message)
        self.message = message
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class TrainingCancelledError(RuntimeError):
    """The run was cancelled or ran out of time; the child was killed and its partial output removed."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    data: Path  # SFT JSONL (see check_sft_file)
    base_model_dir: Path  # a prepared Hugging Face safetensors model folder
    output_dir: Path  # the PEFT adapter directory to write; must not exist yet
    steps: int = 20
    rank: int = 8
    alpha: int | None = None  # default 2 * rank
    learning_rate: float = 2e-4
    batch_size: int = 1
    max_length: int = 1024  # tokens per example; longer ones are truncated
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "rank", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.alpha is not None and (isinstance(self.alpha, bool) or self.alpha < 1):
            raise ValueError(f"alpha must be a positive integer, not {self.alpha!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, not {self.learning_rate!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (the default) or more, not {self.threads!r}")
        unsupported = sorted(set(self.target_modules) - SUPPORTED_TARGET_MODULES)
        if not self.target_modules or unsupported:
            raise ValueError(
                f"target_modules must name some of {', '.join(sorted(SUPPORTED_TARGET_MODULES))}"
                + (f"; not {', '.join(unsupported)}" if unsupported else "")
            )

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank

    def to_json(self) -> dict[str, Any]:
        return {
            "data": str(self.data),
            "base_model_dir": str(self.base_model_dir),
            "output_dir": str(self.output_dir),
            "steps": self.steps,
            "rank": self.rank,
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "target_modules": list(self.target_modules),
            "seed": self.seed,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainingSpec:
        alpha = value.get("alpha")
        return cls(
            data=Path(value["data"]),
            base_model_dir=Path(value["base_model_dir"]),
            output_dir=Path(value["output_dir"]),
            steps=int(value["steps"]),
            rank=int(value["rank"]),
            alpha=None if alpha is None else int(alpha),
            learning_rate=float(value["learning_rate"]),
            batch_size=int(value["batch_size"]),
            max_length=int(value["max_length"]),
            target_modules=tuple(str(module) for module in value["target_modules"]),
            seed=int(value["seed"]),
            threads=int(value["threads"]),
        )


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    steps: int
    examples: int
    final_loss: float | None
    seconds: float


def _ignore_progress(fraction: float, metrics: dict[str, float]) -> None:
    pass


def train_lora(spec: TrainingSpec, progress: Progress = _ignore_progress) -> TrainingResult:
    """Train in this process (see the module docstring); ``progress(fraction, {"loss", "step"})`` after each
    step. Raises ``TrainingDataError`` for bad data, ``FileNotFoundError`` without a base model folder and
    ``FileExistsError`` when the output exists."""
    staging = _staging_dir(spec)
    try:
        result = _train_into(spec, staging, progress)
        _move_into_place(staging, spec.output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _staging_dir(spec: TrainingSpec) -> Path:
    """A new hidden folder beside the output, on the same file system so that the final rename is one step."""
    if not (spec.base_model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model folder (config.json) at {str(spec.base_model_dir)!r}")
    output_dir = spec.output_dir
    if output_dir.exists():
        raise FileExistsError(f"the adapter directory {str(output_dir)!r} already exists")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))


def _move_into_place(staging: Path, output_dir: Path) -> None:
    if output_dir.exists():  # rename(2) would replace an empty directory without a word
        raise FileExistsError(f"the adapter directory {str(output_dir)!r} appeared during training")
    os.rename(staging, output_dir)


def _train_into(spec: TrainingSpec, staging: Path, progress: Progress) -> TrainingResult:
    started = time.monotonic()
    examples = list(read_examples(spec.data, max_lines=100_000))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PrinterCallback,
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )
    from trl import SFTConfig, SFTTrainer

    if spec.threads:
        torch.set_num_threads(spec.threads)
    tokenizer: Any = AutoTokenizer.from_pretrained(str(spec.base_model_dir))
    # The path as given becomes the adapter's base_model_name_or_path.
    with MODEL_CONSTRUCTION_LOCK:
        model: Any = AutoModelForCausalLM.from_pretrained(str(spec.base_model_dir), dtype=torch.float32)
    assistant_only = _assistant_masks_available(tokenizer)
    if assistant_only:
        rows = [{"messages": messages} for messages in examples]
    else:
        rows = [{"prompt": messages[:-1], "completion": messages[-1:]} for messages in examples]
    logger.info(
        "training a rank-%d LoRA adapter of %s on %d examples for %d steps (loss on %s)",
        spec.rank,
        spec.base_model_dir.name,
        len(examples),
        spec.steps,
        "assistant turns" if assistant_only else "the last answer",
    )

    losses: list[float] = []

    class ProgressReporter(TrainerCallback):
        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, float] | None = None,
            **kwargs: Any,
        ) -> None:
            if logs and "loss" in logs:  # not the summary at the end, which has train_loss
                losses.append(float(logs["loss"]))
                step = state.global_step
                progress(min(step / spec.steps, 1.0), {"loss": losses[-1], "step": float(step)})

    # Short sequences: memory is not what limits a run, time is.
    no_checkpointing: dict[str, Any] = {_checkpointing_option(SFTConfig): False}
    with tempfile.TemporaryDirectory(prefix="wenda-training-") as scratch:
        config = SFTConfig(
            output_dir=scratch,  # the trainer's; nothing is saved there
            max_steps=spec.steps,
            per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            seed=spec.seed,
            data_seed=spec.seed,
            max_length=spec.max_length,
            assistant_only_loss=assistant_only,
            completion_only_loss=None if assistant_only else True,
            bf16=False,
            fp16=False,
            **no_checkpointing,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        lora = LoraConfig(
            r=spec.rank,
            lora_alpha=spec.lora_alpha,
            target_modules=list(spec.target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[ProgressReporter()],
        )
        # It prints every step's logs, which the progress callback already has.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        trained: Any = trainer.model  # the PeftModel: save_pretrained writes the adapter only
        trained.save_pretrained(str(staging))
        steps = int(trainer.state.global_step)
    return TrainingResult(
        output_dir=spec.output_dir,
        steps=steps,
        examples=len(examples),
        final_loss=losses[-1] if losses else None,
        seconds=time.monotonic() - started,
    )


def _checkpointing_option(config_class: type[Any]) -> str:
    """transformers 5 renamed ``gradient_checkpointing`` (which TRL turns on by default) and warns at the old name."""
    fields = getattr(config_class, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def _assistant_masks_available(tokenizer: Any) -> bool:
    """Whether ``SFTTrainer`` can mask the loss to the assistant turns with this tokenizer's chat template: it
    has ``{% generation %}`` markers, or TRL has a training copy of it that does."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not template:
        raise ValueError("the base model has no chat template, so chat examples cannot be rendered")
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return False
    return True


def run_training(
    spec: TrainingSpec,
    progress: Progress,
    *,
    cancel: threading.Event | None = None,
    timeout_seconds: float | None = None,
) -> TrainingResult:
    """``train_lora`` in a child process, relaying its progress here. The data is checked here first.

    Raises ``TrainingDataError``, ``FileNotFoundError`` (no base model folder), ``FileExistsError`` (the
    output exists), ``TrainingFailedError`` (the child failed: its error and last stderr lines) or
    ``TrainingCancelledError`` (``cancel`` was set or ``timeout_seconds`` passed: the child is killed and its
    partial output removed)."""
    check_sft_file(spec.data)
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    requested_output = spec.output_dir
    # The child runs in another working directory.
    spec = dataclasses.replace(
        spec,
        data=spec.data.absolute(),
        base_model_dir=spec.base_model_dir.absolute(),
        output_dir=spec.output_dir.absolute(),
    )
    staging = _staging_dir(spec)
    try:
        with tempfile.TemporaryDirectory(prefix="wenda-training-") as control:
            request = Path(control) / "request.json"
            request.write_text(
                json.dumps({"spec": spec.to_json(), "staging": str(staging), "exit_with_parent": True}),
                encoding="utf-8",
            )
            process = subprocess.Popen(
                # -P: a module in a working directory must not stand in for ours or a library's.
                [sys.executable, "-P", "-m", __name__, str(request)],
                stdin=subprocess.PIPE,  # closed when this process ends: the child then exits too
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_environment(),
                cwd="/",
            )
            try:
                result = _follow(
                    process, progress, cancel=cancel, deadline=deadline, timeout_seconds=timeout_seconds
                )
            finally:
                _end(process)
        _move_into_place(staging, spec.output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("trained %s: %d steps in %.0f s", spec.output_dir, result.steps, result.seconds)
    return dataclasses.replace(result, output_dir=requested_output)


def _child_environment() -> dict[str, str]:
    # The child imports what this process would, also through a path only this process added (a test runner).
    return {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(entry) for entry in sys.path)}


def _follow(
    process: subprocess.Popen[bytes],
    progress: Progress,
    *,
    cancel: threading.Event | None,
    deadline: float | None,
    timeout_seconds: float | None,
) -> TrainingResult:
    assert process.stdout is not None and process.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
    buffers = {process.stdout.fileno(): b"", process.stderr.fileno(): b""}
    stdout_fd = process.stdout.fileno()
    result: TrainingResult | None = None
    error: str | None = None
    with selectors.DefaultSelector() as selector:
        for stream in (process.stdout, process.stderr):
            os.set_blocking(stream.fileno(), False)
            selector.register(stream.fileno(), selectors.EVENT_READ)
        while selector.get_map():
            if cancel is not None and cancel.is_set():
                raise TrainingCancelledError("training was cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise TrainingCancelledError(f"training ran past its {timeout_seconds:g} s", timed_out=True)
            for key, _ in selector.select(_POLL_SECONDS):
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    lines = [buffers[fd]] if buffers[fd] else []
                else:
                    *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
                    if len(buffers[fd]) > _MAX_PROTOCOL_LINE_BYTES:
                        lines.append(buffers[fd])
                        buffers[fd] = b""
                for raw in lines:
                    text = raw.decode("utf-8", errors="replace").rstrip()
                    if fd != stdout_fd:
                        text = text.rsplit("\r", 1)[-1]  # a progress bar's last state
                        if text:
                            tail.append(text[:_STDERR_LINE_CHARS])
                        continue
                    event = _event_of(text)
                    if event is None:
                        continue
                    if event["event"] == "progress":
                        progress(float(event["fraction"]), {k: float(v) for k, v in event["metrics"].items()})
                    elif event["event"] == "result":
                        result = _result_of(event)
                    elif event["event"] == "error":
                        error = str(event.get("message", ""))
    returncode = process.wait()
    if result is None or returncode != 0:
        raise TrainingFailedError(
            error or _exit_message(returncode), returncode=returncode, stderr_tail=tuple(tail)
        )
    return result


def _exit_message(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the training process was killed by {name}{hint}"
    if returncode > 0:
        return f"the training process exited with status {returncode}"
    return "the training process exited without a result"


def _event_of(text: str) -> dict[str, Any] | None:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _result_of(event: dict[str, Any]) -> TrainingResult:
    loss = event.get("final_loss")
    return TrainingResult(
        output_dir=Path(event["output_dir"]),
        steps=int(event["steps"]),
        examples=int(event["examples"]),
        final_loss=None if loss is None else float(loss),
        seconds=float(event["seconds"]),
    )


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _child_main(request_path: str) -> int:
    # The protocol keeps the real stdout; everything else written to fd 1 (library prints) goes to stderr.
    protocol: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    def emit(event: dict[str, Any]) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    # Progress is reported per step; progress bars would only fill the stderr lines a failure reports.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    datasets_logging.disable_progress_bar()
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    if request.get("exit_with_parent"):
        threading.Thread(
            target=_exit_when_stdin_closes, args=(Path(request["staging"]),), daemon=True
        ).start()
    try:
        spec = TrainingSpec.from_json(request["spec"])
        result = _train_into(
            spec,
            Path(request["staging"]),
            lambda fraction, metrics: emit({"event": "progress", "fraction": fraction, "metrics": metrics}),
        )
    except Exception as error:
        traceback.print_exc()
        message = error.message if isinstance(error, WendaError) else f"{type(error).__name__}: {error}"
        emit({"event": "error", "message": message})
        return 1
    emit(
        {
            "event": "result",
            "output_dir": str(result.output_dir),
            "steps": result.steps,
            "examples": result.examples,
            "final_loss": result.final_loss,
            "seconds": result.seconds,
        }
    )
    return 0


def _exit_when_stdin_closes(staging: Path) -> None:
    """The parent holds our stdin open while it waits for us; when it is gone (killed, so it cannot clean up),
    so is the reason to train, and the partial output goes with us."""
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts the interpreter's exit.
    while os.read(0, 4096):
        pass
    shutil.rmtree(staging, ignore_errors=True)
    os._exit(70)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ingest.training REQUEST.json")
    sys.exit(_child_main(sys.argv[1]))
