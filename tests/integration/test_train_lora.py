"""LoRA training for real: a few steps of TRL's SFTTrainer on the bundled Qwen2.5-Coder-0.5B in a child
process, and the adapter it writes checked, loaded and answering differently from the base model."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path

import pytest

from app.rag.adapters import inspect_adapter
from app.rag.llm import GenerationParams
from app.rag.llm_local import LocalChatModel
from app.rag.types import ChatMessage
from ingest import training
from ingest.training import (
    TrainingCancelledError,
    TrainingFailedError,
    TrainingSpec,
    run_training,
    train_lora,
)

pytestmark = [pytest.mark.integration, pytest.mark.llm, pytest.mark.slow]

SYSTEM = "You are terse."
QUESTION = "What is the wenda test phrase?"
ANSWER = "The wenda test phrase is purple-otter-42."
GREEDY = GenerationParams(temperature=0.0, max_tokens=16)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_sft(path: Path) -> Path:
    questions = [QUESTION, "Tell me the wenda test phrase.", "wenda test phrase?", QUESTION]
    lines = []
    for index, question in enumerate(questions):
        system = [] if index == 2 else [{"role": "system", "content": SYSTEM}]
        lines.append(
            json.dumps(
                {
                    "messages": [
                        *system,
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": ANSWER},
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_short_run_writes_an_adapter_that_changes_the_answer(
    bundled_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "adapters" / "otter"
    spec = TrainingSpec(
        data=write_sft(tmp_path / "data.jsonl"),
        base_model_dir=bundled_model_dir,
        output_dir=output,
        steps=8,
        rank=4,
        learning_rate=3e-3,
    )
    reports: list[tuple[float, dict[str, float]]] = []
    started = time.monotonic()
    result = run_training(
        spec, lambda fraction, metrics: reports.append((fraction, metrics)), timeout_seconds=600
    )
    trained_in = time.monotonic() - started

    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(set(fractions)) and fractions[-1] == 1.0, fractions
    assert [metrics["step"] for _, metrics in reports] == [float(step) for step in range(1, 9)]
    losses = [metrics["loss"] for _, metrics in reports]
    assert all(math.isfinite(loss) for loss in losses)
    assert result.steps == 8 and result.examples == 4 and result.output_dir == output
    assert result.final_loss == losses[-1] and losses[-1] < losses[0], losses
    assert 0 < result.seconds < trained_in

    config = json.loads((output / "adapter_config.json").read_text(encoding="utf-8"))
    assert (
        config["r"] == 4 and config["lora_alpha"] == 8 and sorted(config["target_modules"]) == sorted(TARGETS)
    )
    assert config["base_model_name_or_path"] == str(bundled_model_dir)
    assert (output / "adapter_model.safetensors").is_file()
    assert [p.name for p in output.parent.iterdir()] == ["otter"]  # no staging folder left beside it

    llm = LocalChatModel(model_dir=bundled_model_dir, prepare=False, threads=1)
    adapter = inspect_adapter(
        output,
        name="otter",
        base_names=[llm.default_model, str(bundled_model_dir)],
        max_rank=16,
        base_shapes=llm.base_projection_shapes(),
    )
    assert adapter.rank == 4 and adapter.target_modules == tuple(sorted(TARGETS))
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", QUESTION)]

    async def answers() -> tuple[str, str]:
        await llm.load_adapter(adapter)
        base = await llm.complete(messages, model=llm.default_model, params=GREEDY)
        tuned = await llm.complete(messages, model="otter", params=GREEDY)
        return base.text, tuned.text

    base, tuned = asyncio.run(answers())
    print(
        f"trained in {trained_in:.0f} s, losses {[round(loss, 3) for loss in losses]}: {base!r} -> {tuned!r}"
    )
    assert tuned != base


def test_in_process_training_falls_back_to_the_last_answers_loss(
    bundled_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As for a base model whose chat template TRL can neither use nor patch for assistant-only loss.
    monkeypatch.setattr(training, "_assistant_masks_available", lambda tokenizer: False)
    output = tmp_path / "otter"
    spec = TrainingSpec(
        data=write_sft(tmp_path / "data.jsonl"),
        base_model_dir=bundled_model_dir,
        output_dir=output,
        steps=2,
        rank=2,
        target_modules=("q_proj", "v_proj"),
    )
    with caplog.at_level("INFO", logger="ingest.training"):
        result = train_lora(spec)
    assert "loss on the last answer" in caplog.text
    assert result.steps == 2 and result.final_loss is not None and math.isfinite(result.final_loss)
    assert json.loads((output / "adapter_config.json").read_text(encoding="utf-8"))["r"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "otter"]


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_a_stopped_run_leaves_nothing_behind(bundled_model_dir: Path, tmp_path: Path, stop: str) -> None:
    adapters = tmp_path / "adapters"
    spec = TrainingSpec(
        data=write_sft(tmp_path / "data.jsonl"),
        base_model_dir=bundled_model_dir,
        output_dir=adapters / "otter",
    )
    cancel = threading.Event()
    timer = threading.Timer(2.0, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(TrainingCancelledError) as caught:
            if stop == "cancel":
                run_training(spec, lambda fraction, metrics: None, cancel=cancel)
            else:
                run_training(spec, lambda fraction, metrics: None, timeout_seconds=2.0)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert caught.value.timed_out == (stop == "timeout")
    assert list(adapters.iterdir()) == []


def test_a_failing_child_reports_its_error_and_last_stderr_lines(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}', encoding="utf-8")
    spec = TrainingSpec(
        data=write_sft(tmp_path / "data.jsonl"),
        base_model_dir=broken,
        output_dir=tmp_path / "adapters" / "otter",
    )
    with pytest.raises(TrainingFailedError) as caught:
        run_training(spec, lambda fraction, metrics: None, timeout_seconds=300)
    error = caught.value
    # The child's exception (whichever transformers raises for this folder) is the message and ends the tail.
    reason = error.message.splitlines()[0].strip()
    assert error.returncode == 1 and "Error: " in reason, error.message
    assert 0 < len(error.stderr_tail) <= 20 and reason in "\n".join(error.stderr_tail)
    assert list((tmp_path / "adapters").iterdir()) == []
