"""Prompt templates from files, rendered in a sandboxed Jinja environment where every variable is required.

A template is a folder under the prompts directory (see ``prompts/README.md``): ``template.yaml`` plus
``system.<lang>.j2``, ``user.<lang>.j2`` and optional ``examples.<lang>.yaml`` few-shot turns.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from app.rag.errors import InvalidInputError, NotFoundError
from app.rag.evidence import DocumentSpan, Fact

if TYPE_CHECKING:
    from app.rag.citations import Passage
from app.rag.types import ChatMessage

logger = logging.getLogger(__name__)

LANGUAGES = ("zh", "en")


class PromptVariableError(InvalidInputError):
    """A template needs a variable the request did not provide."""

    code = "missing_template_variable"


@dataclass(frozen=True)
class FewShotExample:
    variables: Mapping[str, Any]
    answer: str
    # "facts": shown instead of the others when the real passages hold a fact (a small model copies the
    # example's shape: a command for a document, a value for a fact).
    when: str | None = None


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    description: str
    variables: tuple[str, ...]
    refusal: Mapping[str, str]
    stop: tuple[str, ...] = ()  # generation stops before these (the labels the user template writes)
    examples: Mapping[str, tuple[FewShotExample, ...]] = field(default_factory=dict)
    version: str = ""  # sha256 over the template's files: which wording an answer record was given with
    internal: bool = False  # used by wenda itself (rewrite): a request can neither name nor list it


class PromptLibrary:
    """All templates of a prompts directory, loaded and checked once."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._environment = SandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates = {t.name: t for t in self._load_all()}
        if not self._templates:
            raise FileNotFoundError(f"no prompt templates in {directory}")

    def _load_all(self) -> list[PromptTemplate]:
        templates = []
        for folder in sorted(p for p in self._directory.iterdir() if (p / "template.yaml").is_file()):
            spec = yaml.safe_load((folder / "template.yaml").read_text(encoding="utf-8")) or {}
            for language in LANGUAGES:
                for part in ("system", "user"):
                    if not (folder / f"{part}.{language}.j2").is_file():
                        raise FileNotFoundError(f"{folder.name}: missing {part}.{language}.j2")
            examples = {
                language: tuple(self._examples(folder / f"examples.{language}.yaml"))
                for language in LANGUAGES
            }
            templates.append(
                PromptTemplate(
                    name=folder.name,
                    description=str(spec.get("description", "")),
                    variables=tuple(spec.get("variables", ())),
                    refusal={
                        language: str((spec.get("refusal") or {}).get(language, "")) for language in LANGUAGES
                    },
                    stop=tuple(str(s) for s in spec.get("stop") or () if s),
                    examples=examples,
                    version=_folder_digest(folder),
                    internal=bool(spec.get("internal", False)),
                )
            )
        return templates

    @staticmethod
    def _examples(path: Path) -> list[FewShotExample]:
        if not path.is_file():
            return []
        items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        examples = []
        for item in items:
            passages = [
                {
                    "number": n,
                    "kind": p.get("kind", "document"),
                    "source": p.get("source", ""),
                    "section": p.get("section", ""),
                    "text": p["text"],
                }
                for n, p in enumerate(item.get("passages", []), start=1)
            ]
            examples.append(
                FewShotExample(
                    variables={"question": item["question"], "passages": passages},
                    answer=item["answer"],
                    when=item.get("when"),
                )
            )
        return examples

    def names(self, *, include_internal: bool = False) -> list[str]:
        """The templates a request may name (and, asked for, wenda's internal ones too)."""
        return sorted(n for n, t in self._templates.items() if include_internal or not t.internal)

    def get(self, name: str) -> PromptTemplate:
        template = self._templates.get(name)
        if template is None:
            raise NotFoundError(
                f"template {name!r} not found; available: {', '.join(self.names())}", param="template"
            )
        return template

    def requested(self, name: str) -> PromptTemplate:
        """A template a request named: internal ones are not found, as they are not listed."""
        template = self.get(name)
        if template.internal:
            raise NotFoundError(
                f"template {name!r} not found; available: {', '.join(self.names())}", param="template"
            )
        return template

    def undeclared_variables(self, name: str, language: str) -> set[str]:
        """Variables the template's files actually use (for checking template.yaml against the files)."""
        used: set[str] = set()
        for part in ("system", "user"):
            source = (self._directory / name / f"{part}.{language}.j2").read_text(encoding="utf-8")
            used |= meta.find_undeclared_variables(self._environment.parse(source))
        return used

    def render(self, name: str, language: str, variables: Mapping[str, Any]) -> list[ChatMessage]:
        """System message, few-shot turns, then the user message; every variable must be provided."""
        template = self.get(name)
        if language not in LANGUAGES:
            raise InvalidInputError(f"unsupported language {language!r}", param="language")
        values = {"language": language, "refusal": template.refusal[language], **variables}
        messages = [ChatMessage("system", self._render_file(name, f"system.{language}.j2", values))]
        for example in _examples_for(template.examples.get(language, ()), values.get("passages")):
            messages.append(
                ChatMessage(
                    "user", self._render_file(name, f"user.{language}.j2", {**values, **example.variables})
                )
            )
            messages.append(ChatMessage("assistant", example.answer))
        messages.append(ChatMessage("user", self._render_file(name, f"user.{language}.j2", values)))
        return messages

    def _render_file(self, name: str, filename: str, values: Mapping[str, Any]) -> str:
        try:
            return self._environment.get_template(f"{name}/{filename}").render(**values).strip()
        except UndefinedError as error:
            raise PromptVariableError(
                f"template {name!r} ({filename}) needs a variable that was not provided: {error.message}",
                param="template",
            ) from error
        except TemplateError as error:
            logger.error("prompt template %s/%s failed to render: %s", name, filename, error)
            raise


def _examples_for(examples: Sequence[FewShotExample], passages: Any) -> list[FewShotExample]:
    """The examples ``when: facts`` if a passage is a fact and there are such examples; else the others."""
    has_fact = any(isinstance(p, Mapping) and p.get("kind") == "fact" for p in passages or ())
    for_facts = [e for e in examples if e.when == "facts"]
    if has_fact and for_facts:
        return for_facts
    return [e for e in examples if e.when is None]


def detect_language(text: str) -> str:
    """``zh`` when a meaningful share of the letters are CJK ideographs, else ``en``."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and cjk / letters >= 0.2 else "en"


def passages_for_prompt(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """Numbered evidence as the templates get it: ``number``, ``kind`` (document, fact, correction),
    ``source``, ``section`` and ``text``; a fact's ``text`` is its value and its ``section`` its name."""
    items: list[dict[str, Any]] = []
    for passage in passages:
        evidence = passage.evidence
        item: dict[str, Any] = {"number": passage.number, "kind": evidence.kind.value}
        if isinstance(evidence, DocumentSpan):
            item.update(source=evidence.source, section=evidence.section, text=evidence.text)
        elif isinstance(evidence, Fact):
            item.update(source=evidence.source, section=evidence.name, text=evidence.value)
        else:
            item.update(source=f"feedback {evidence.feedback_id}", section="", text=evidence.text)
        items.append(item)
    return items


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
