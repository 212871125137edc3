"""Supervised fine-tuning data: the JSONL format wenda trains LoRA adapters on and exports feedback as.

One example per line, TRL's conversational format: ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}, ...]}``, with at least one user message and the assistant's answer last (the schema is
``app/schemas/export_sft.schema.json``). ``check_sft_file`` reads a whole file and names the first bad line,
before a training job is queued and again before it runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from app.rag.errors import WendaError

ROLES = frozenset({"system", "user", "assistant"})


class TrainingDataError(WendaError):
    """The SFT file cannot be trained on; the message names the first bad line."""

    code = "invalid_training_data"

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message, param="data")
        self.line = line


def check_sft_file(path: Path, *, max_lines: int = 100_000) -> int:
    """Validate every line (JSON object, `messages` list of role/content dicts, roles known, at least one user
    and the last one assistant, non-empty contents); returns the number of examples; raises
    ``TrainingDataError`` naming the first bad line. Blank lines are skipped."""
    return sum(1 for _ in read_examples(path, max_lines=max_lines))


def read_examples(path: Path, *, max_lines: int) -> Iterator[list[dict[str, str]]]:
    """Each example's messages, reduced to role and content."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed by the with below; a failure to open is named apart
    except OSError as error:
        raise TrainingDataError(f"cannot read the training data {str(path)!r}: {error.strerror}") from error
    examples = 0
    with source:
        for number, raw in enumerate(source, start=1):
            try:
                # Per line, so that the error names the line; a byte-order mark may start the file.
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise TrainingDataError(f"line {number}: not UTF-8 text", line=number) from error
            if not line.strip():
                continue
            examples += 1
            if examples > max_lines:
                raise TrainingDataError(
                    f"line {number}: more than {max_lines} examples in one file", line=number
                )
            yield example_of(line, number)
    if examples == 0:
        raise TrainingDataError(f"the training data {str(path)!r} has no examples")


def example_of(line: str, number: int) -> list[dict[str, str]]:
    def bad(what: str) -> TrainingDataError:
        return TrainingDataError(f"line {number}: {what}", line=number)

    try:
        record = json.loads(line)
    except ValueError as error:
        raise bad(f"not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise bad('expected a JSON object {"messages": [...]}')
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad('"messages" must be a non-empty list of {"role", "content"} objects')
    example: list[dict[str, str]] = []
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise bad(f'message {index} is not a {{"role", "content"}} object')
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise bad(f"message {index}: role {role!r} is not one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str) or not content.strip():
            raise bad(f"message {index} ({role}): content must be non-empty text")
        example.append({"role": str(role), "content": content})
    if not any(message["role"] == "user" for message in example):
        raise bad("no user message")
    if example[-1]["role"] != "assistant":
        raise bad(f"the last message must be the assistant's answer, not {example[-1]['role']!r}")
    return example
