"""The SFT file check names the first bad line; the training spec refuses values it cannot train with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.rag.training_data import TrainingDataError, check_sft_file
from ingest.training import TrainingSpec, run_training

GOOD = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the wenda test phrase?"},
        {"role": "assistant", "content": "The wenda test phrase is purple-otter-42."},
    ]
}


def write_lines(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


def messages(*pairs: tuple[str, object]) -> dict[str, object]:
    return {"messages": [{"role": role, "content": content} for role, content in pairs]}


def test_a_good_file_counts_its_examples_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "data.jsonl", GOOD, "", messages(("user", "Hi"), ("assistant", "Hello.")), "  "
    )
    assert check_sft_file(path) == 2


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"text": "plain text"}, '"messages" must be a non-empty list'),
        ({"messages": []}, '"messages" must be a non-empty list'),
        ({"messages": ["hello"]}, "message 1 is not"),
        (messages(("user", "Hi"), ("tool", "42"), ("assistant", "42.")), "message 2: role 'tool'"),
        (messages(("user", "Hi"), ("assistant", "   ")), "message 2 (assistant): content must be non-empty"),
        (messages(("user", "Hi"), ("assistant", ["parts"])), "content must be non-empty text"),
        (messages(("system", "Be terse."), ("assistant", "Fine.")), "no user message"),
        (messages(("user", "Hi"), ("assistant", "Hello."), ("user", "And?")), "the last message must be"),
    ],
)
def test_the_first_bad_line_is_named(tmp_path: Path, bad_line: object, expected: str) -> None:
    path = write_lines(tmp_path / "data.jsonl", GOOD, "", bad_line, "{also bad")
    with pytest.raises(TrainingDataError) as caught:
        check_sft_file(path)
    assert caught.value.line == 3
    assert caught.value.message.startswith("line 3: ") and expected in caught.value.message, (
        caught.value.message
    )


def test_no_examples_too_many_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.jsonl", "", " ")
    with pytest.raises(TrainingDataError, match="no examples"):
        check_sft_file(empty)
    many = write_lines(tmp_path / "many.jsonl", GOOD, GOOD, GOOD)
    with pytest.raises(TrainingDataError, match="line 3: more than 2 examples"):
        check_sft_file(many, max_lines=2)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes((json.dumps(GOOD) + "\n").encode() * 2 + b'{"messages": "\xff\xfe"}\n')
    with pytest.raises(TrainingDataError, match="line 3: not UTF-8"):
        check_sft_file(binary)
    with pytest.raises(TrainingDataError, match="cannot read"):
        check_sft_file(tmp_path / "missing.jsonl")


def test_the_spec_refuses_what_it_cannot_train_and_survives_json(tmp_path: Path) -> None:
    paths = {"data": tmp_path / "d.jsonl", "base_model_dir": tmp_path / "m", "output_dir": tmp_path / "o"}
    for bad in ({"steps": 0}, {"rank": -1}, {"alpha": 0}, {"learning_rate": float("nan")}, {"threads": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainingSpec(**paths, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lm_head"):
        TrainingSpec(**paths, target_modules=("q_proj", "lm_head"))
    spec = TrainingSpec(**paths, rank=4, learning_rate=3e-3, target_modules=("q_proj", "v_proj"))
    assert spec.lora_alpha == 8
    assert TrainingSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_bad_data_and_an_existing_output_fail_before_a_child_starts(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "data.jsonl", GOOD)
    output = tmp_path / "adapter"
    output.mkdir()
    model = tmp_path / "model"
    spec = TrainingSpec(data=data, base_model_dir=model, output_dir=output)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        run_training(spec, lambda fraction, metrics: None)
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match="already exists"):
        run_training(spec, lambda fraction, metrics: None)
    write_lines(data, GOOD, messages(("user", "Hi")))
    with pytest.raises(TrainingDataError, match="line 2"):
        run_training(spec, lambda fraction, metrics: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "data.jsonl", "model"]
