"""The import directions in STYLE.md, read from the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# api -> services -> rag, db; ingest -> rag, db; only the wiring (main, components, cli) starts workers.
BANNED = {
    "app/rag": (
        "fastapi",
        "starlette",
        "sqlalchemy",
        "app.api",
        "app.db",
        "app.services",
        "app.schemas",
        "app.components",
        "ingest",
    ),
    "app/db": ("fastapi", "starlette", "app.api", "app.rag", "app.services", "app.schemas", "ingest"),
    "app/api": ("app.db", "sqlalchemy", "ingest"),
    "app/services": ("fastapi", "app.api", "app.schemas", "ingest"),
    "app/schemas": ("app.db", "app.services", "app.api", "sqlalchemy", "ingest"),
    # ingest never imports upward into the app's use cases, routers or wiring.
    "ingest": ("fastapi", "starlette", "app.api", "app.services", "app.schemas", "app.components", "app.main"),
}
# The lifecycle enums of stored rows are shared by the schemas and the CLI: the one thing of app.db they read.
ALLOWED = {"app/schemas": ("app.db.statuses",)}


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
        and name not in ALLOWED.get(folder, ())
    ]
    assert offenders == []
