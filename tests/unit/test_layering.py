"""The import directions in STYLE.md, read from the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BANNED = {
    "app/rag": ("fastapi", "starlette", "sqlalchemy", "app.api", "app.db"),
    "ingest": ("fastapi", "starlette", "app.api"),
    "app/db": ("fastapi", "starlette", "app.api", "app.rag", "ingest"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(BANNED))
def test_layer_imports_only_what_it_may(folder: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in _imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in BANNED[folder])
    ]
    assert offenders == []
