"""PostgreSQL faults through a TCP proxy on loopback that the test cuts and blackholes (the machine's shared
PostgreSQL is never stopped): 503 with Retry-After within 2 s, /readyz not ready during the outage and ready
within 10 s after it, /healthz untouched, no request hanging past its budget, recovery without a restart."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sqlalchemy import make_url

from app.components import build_components
from app.main import create_app
from tests.api.test_documents_api import wait_ready
from tests.conftest import make_settings, served_on_loopback
from tests.fakes import FakeChatModel, FakeEmbedder

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

Mode = Literal["forward", "blackhole"]


class TcpProxy:
    """Forwards 127.0.0.1:port to the real server. ``cut`` closes every connection and stops listening
    (connection refused); ``blackhole`` keeps every connection and accepts new ones but passes nothing on,
    either way (a server that stopped answering); ``restore`` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self.mode: Mode = "forward"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
                return
            if self.mode == "blackhole":
                continue  # swallowed: the other side waits for an answer that never comes
            try:
                sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown wakes the thread blocked in accept(); close alone would leave the port listening.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def restore(self) -> None:
        self.mode = "forward"
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        if self._listener is not None:
            self.cut()


@pytest.fixture
def proxied(tmp_path: Path, database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    url = make_url(database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    settings = make_settings(
        tmp_path / "data",
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        worker={"poll_seconds": 0.2, "lease_seconds": 5},
        # Off the request path (the worker's polling) waits are statement timeout + 5 s: short here, so
        # that shutting the test down does not wait long for a worker stuck in the blackhole.
        database={"statement_timeout_seconds": 2, "probe_interval_seconds": 0.5},
    )
    services = build_components(settings, embedder=FakeEmbedder(), llm=FakeChatModel())
    try:
        with served_on_loopback(create_app(components=services)) as base_url:
            yield proxy, base_url
    finally:
        proxy.restore()
        services.worker.stop()
        services.close_database()
        proxy.close()


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - began


def _assert_unavailable_quickly(client: httpx.Client) -> None:
    for path in ("/v1/collections", "/v1/collections/docs/documents", "/v1/jobs/1"):
        response, took = _timed_get(client, path)
        assert response.status_code == 503, (path, response.text)
        assert took < 2.0, (path, took)
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "database_unavailable"
    readiness, took = _timed_get(client, "/readyz")
    assert readiness.status_code == 503 and took < 2.0
    assert readiness.json()["checks"]["database"].startswith("down")
    health, took = _timed_get(client, "/healthz")
    assert health.status_code == 200 and took < 0.5


def _wait_ready(client: httpx.Client, within: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < within:
        if client.get("/readyz").status_code == 200:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"/readyz not ready within {within} s of the database's return")


def test_a_refused_database_is_a_503_and_recovery_needs_no_restart(proxied: tuple[TcpProxy, str]) -> None:
    proxy, base_url = proxied
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post("/v1/collections/docs/documents", files={"file": ("a.txt", b"some text")})
        assert created.status_code == 202
        wait_ready(client)

        proxy.cut()
        _assert_unavailable_quickly(client)
        upload = client.post("/v1/collections/docs/documents", files={"file": ("b.txt", b"other text")})
        assert upload.status_code == 503 and upload.json()["error"]["code"] == "database_unavailable"

        proxy.restore()
        _wait_ready(client, within=10)
        assert client.get("/v1/collections").status_code == 200
        again = client.post("/v1/collections/docs/documents", files={"file": ("b.txt", b"other text")})
        assert again.status_code == 202


def test_a_database_that_stops_answering_costs_each_request_its_budget_only(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, base_url = proxied
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/v1/collections").status_code == 200
        wait_ready(client)
        proxy.blackhole()
        # Many at once: pooled connections, new ones and the pool itself all time out within the budget,
        # and none of them starves the others.
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda _: _timed_get(client, "/v1/collections"), range(24)))
        assert all(response.status_code == 503 for response, _ in results), [r.text for r, _ in results]
        assert max(took for _, took in results) < 2.0, sorted(took for _, took in results)
        _assert_unavailable_quickly(client)

        proxy.restore()
        _wait_ready(client, within=10)
        assert client.get("/v1/collections").status_code == 200
        created = client.post("/v1/collections/docs/documents", files={"file": ("a.txt", b"some text")})
        assert created.status_code == 202
