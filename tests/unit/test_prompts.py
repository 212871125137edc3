from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest

from app.components import prompts_directory
from app.config import Settings
from app.rag.citations import Passage
from app.rag.errors import NotFoundError
from app.rag.evidence import DocumentSpan
from app.rag.facts.layer import Calendar
from app.rag.prompts import (
    LANGUAGES,
    PromptLibrary,
    PromptVariableError,
    detect_language,
    passages_for_prompt,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def library() -> PromptLibrary:
    return PromptLibrary(prompts_directory(Settings()))


# What the answer flow passes besides the question and passages (app.rag.facts.layer.Calendar).
CALENDAR = {
    language: {**Calendar(date(2026, 12, 2), "Asia/Shanghai").for_template(language), "facts": []}
    for language in ("zh", "en")
}

def test_rendering_puts_examples_between_instructions_and_question(library: PromptLibrary) -> None:
    span = DocumentSpan(
        chunk_id=1,
        document_id=1,
        source="a.txt",
        text="粘滞位保护文件。",
        score=0.0,
        start=0,
        end=8,
        section="权限",
    )
    passages = passages_for_prompt([Passage(number=1, evidence=span)])
    messages = library.render("qa", "zh", {"question": "粘滞位是什么？", "passages": passages, **CALENDAR["zh"]})
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    # Today's date at day granularity, in the system prompt.
    assert messages[0].content.endswith("今天是2026年12月2日，星期三（时区 Asia/Shanghai）。")
    assert "[1]" in messages[2].content  # the example answer shows how to cite
    assert "[1] 来源：a.txt（权限）\n粘滞位保护文件。" in messages[-1].content
    assert messages[-1].content.endswith("问题：粘滞位是什么？")


def test_a_missing_variable_is_an_error_not_an_empty_string(library: PromptLibrary) -> None:
    with pytest.raises(PromptVariableError, match="passages"):
        library.render("qa", "en", {"question": "What?", **CALENDAR["en"]})
    with pytest.raises(NotFoundError):
        library.render("nope", "en", {})


def test_template_yaml_declares_what_the_files_use(library: PromptLibrary) -> None:
    for name in library.names(include_internal=True):
        declared = set(library.get(name).variables)
        for language in LANGUAGES:
            assert library.undeclared_variables(name, language) <= declared, (name, language)


def test_answering_templates_stop_at_their_own_labels(library: PromptLibrary) -> None:
    # Each stop string is the label the user template puts before the question, in both languages.
    for name in ("qa", "summarize", "extract"):
        template = library.get(name)
        assert template.stop
        messages = library.render(
            name, "zh", {"question": "Q", "passages": [], "language": "zh", "refusal": "", **CALENDAR["zh"]}
        )
        english = library.render(
            name, "en", {"question": "Q", "passages": [], "language": "en", "refusal": "", **CALENDAR["en"]}
        )
        user_text = messages[-1].content + english[-1].content
        assert all(stop in user_text for stop in template.stop), name


def test_every_template_folder_ships_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {p.name for p in (ROOT / "prompts").iterdir() if (p / "template.yaml").is_file()}
    assert {f"wenda_prompts.{name}" for name in folders} <= set(config["packages"])
    assert all(f"wenda_prompts.{name}" in config["package-data"] for name in folders)


def test_language_detection() -> None:
    assert detect_language("粘滞位是什么？") == "zh"
    assert detect_language("How does git rebase work?") == "en"
    assert detect_language("git rebase 是做什么的？") == "zh"


def test_a_fact_among_the_passages_brings_the_fact_example(library: PromptLibrary) -> None:
    fact = {"number": 1, "kind": "fact", "source": "clock", "section": "today's date (UTC)", "text": "May 1, 2026"}
    document = {"number": 1, "kind": "document", "source": "a.txt", "section": "", "text": "ps lists processes."}
    with_fact = library.render("qa", "en", {"question": "What is the date?", "passages": [fact], **CALENDAR["en"]})
    assert with_fact[2].content == "1500 times 12 is 18000 [1]."
    assert "Today's date (UTC) is May 1, 2026." in with_fact[-1].content
    plain = library.render("qa", "en", {"question": "What lists processes?", "passages": [document], **CALENDAR["en"]})
    assert plain[2].content.startswith("Run df -h")
