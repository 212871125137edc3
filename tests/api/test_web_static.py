"""The web page's static files: served from here with a policy that forbids other origins, naming nothing
elsewhere, building no markup from text, and with every message in both languages, including one for each
value the API can send that the page names (refusal reasons, statuses, stages, kinds)."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from fastapi.testclient import TestClient

from app.api.web import STATIC_DIR
from app.db.statuses import DocumentStatus
from app.main import create_app
from app.schemas.ask import CitationPublic, FactIssuePublic, RefusalPublic, RoutePublic
from app.schemas.documents import JobStage
from app.schemas.feedback import FeedbackStatusName
from tests.conftest import make_settings

SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
MESSAGES: dict[str, dict[str, str]] = json.loads((STATIC_DIR / "messages.json").read_text(encoding="utf-8"))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # No lifespan: the page and its files need nothing the lifespan builds.
    yield TestClient(create_app(make_settings(tmp_path / "data")))


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.i18n_keys: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("src", "href", "action", "poster", "srcset"):
                self.urls.append(value)
            if name.startswith("data-i18n"):
                self.i18n_keys.add(value)


def _page() -> _References:
    parsed = _References()
    parsed.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    return parsed


def _script_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SCRIPTS)


def test_page_is_served_with_a_policy_that_allows_only_its_own_origin(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["style-src"] == "'self'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-cache"


def test_every_file_the_page_names_is_served_from_here(client: TestClient) -> None:
    page = _page()
    imports = re.findall(r"""from\s+"(\./[\w.-]+)"|fetch\("(/static/[\w.-]+)"\)""", _script_text())
    named = [url for url in page.urls if not url.startswith(("#", "data:"))]
    named += [f"/static/{module[2:]}" if module else fetched for module, fetched in imports]
    assert {"/static/app.js", "/static/style.css", "/static/messages.json", "/static/sse.js"} <= set(named)
    types_by_suffix = {".js": "text/javascript", ".css": "text/css", ".json": "application/json"}
    for url in named:
        assert url.startswith("/static/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(types_by_suffix[Path(url).suffix]), url
        assert response.headers["cache-control"] == "no-cache"
    assert client.get("/static/../api/web.py").status_code == 404


def test_no_static_file_refers_to_another_origin() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        for reference in ("http://", "https://", "//cdn", "@import", "url("):
            assert reference not in text.lower(), f"{path.name} holds {reference}"


def test_scripts_build_no_markup_from_text() -> None:
    # The answer, quotes and file names come from documents and the model: they go in as text nodes only.
    scripts = _script_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in scripts, sink


def _placeholders(message: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", message))


def test_both_languages_have_every_message_the_page_uses() -> None:
    english, chinese = MESSAGES["en"], MESSAGES["zh"]
    assert english.keys() == chinese.keys()
    for key in english:
        assert _placeholders(english[key]) == _placeholders(chinese[key]), key
    used = _page().i18n_keys | set(re.findall(r"""\bt\("([\w.]+)"[,)]""", _script_text()))
    assert len(used) > 50
    assert used - english.keys() == set()


def _literal_values(annotation: Any) -> set[str]:
    """The strings a Literal (optionally in a union with None) allows."""
    if get_origin(annotation) is Literal:
        return {value for value in get_args(annotation) if isinstance(value, str)}
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_literal_values(member) for member in get_args(annotation)))
    return set()


# Every message family the scripts pick by a value the API sends (t(`prefix.${value}`)), and those values.
FAMILIES: dict[str, set[str]] = {
    "refusal.": _literal_values(RefusalPublic.model_fields["reason"].annotation),
    "route.": _literal_values(RoutePublic.model_fields["reason"].annotation),
    "route.cause.": _literal_values(RoutePublic.model_fields["cause"].annotation),
    "documents.status.": {status.value for status in DocumentStatus},
    "stage.": _literal_values(JobStage),
    "citation.kind.": _literal_values(CitationPublic.model_fields["kind"].annotation),
    "feedback.saved.": _literal_values(FeedbackStatusName),
    "fact.": _literal_values(FactIssuePublic.model_fields["action"].annotation),
}


def test_messages_cover_every_value_the_api_sends() -> None:
    chosen_by_value = set(re.findall(r"\bt\(`([\w.]+)\$\{", _script_text()))
    assert chosen_by_value == set(FAMILIES)
    for prefix, values in FAMILIES.items():
        assert values, prefix
        for language, messages in MESSAGES.items():
            missing = {value for value in values if f"{prefix}{value}" not in messages}
            assert not missing, (language, prefix, missing)
