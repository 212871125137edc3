"""Bodies over the upload limit are refused before they are read: a 200 MB upload costs the server neither
memory nor disk, declared or chunked."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from urllib.parse import urlsplit

from app.components import Components

MIB = 1024 * 1024


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakSampler:
    """Samples this process's resident memory and the temp dir's disk use while an upload runs."""

    def __init__(self) -> None:
        self.base_memory, self.base_disk = _resident_bytes(), shutil.disk_usage(tempfile.gettempdir()).used
        self.peak_memory, self.peak_disk = self.base_memory, self.base_disk
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_memory = max(self.peak_memory, _resident_bytes())
            self.peak_disk = max(self.peak_disk, shutil.disk_usage(tempfile.gettempdir()).used)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _multipart_head(boundary: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()


def _status_and_body(connection: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    connection.settimeout(10)
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _send_until_refused(connection: socket.socket, total: int, chunked: bool) -> int:
    """Send up to ``total`` bytes of file body; returns how many went before the server stopped reading."""
    piece = b"x" * MIB
    sent = 0
    connection.settimeout(5)
    try:
        while sent < total:
            if chunked:
                connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                connection.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def _upload(url: str, size: int, *, chunked: bool) -> tuple[int, dict[str, object], int, float]:
    parts = urlsplit(url)
    boundary = "wenda-test-boundary"
    head = _multipart_head(boundary)
    tail = f"\r\n--{boundary}--\r\n".encode()
    began = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port)) as connection:
        headers = [
            "POST /v1/collections/big/documents HTTP/1.1",
            f"Host: {parts.netloc}",
            f"Content-Type: multipart/form-data; boundary={boundary}",
        ]
        headers.append(
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + size + len(tail)}"
        )
        connection.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        if chunked:
            connection.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        else:
            connection.sendall(head)
        sent = _send_until_refused(connection, size, chunked)
        status, body = _status_and_body(connection)
    return status, body, sent, time.monotonic() - began


def test_a_200_mb_upload_is_refused_with_memory_and_disk_flat(live_url: str, services: Components) -> None:
    size = 200 * MIB
    assert services.settings.max_upload_bytes < size
    with PeakSampler() as sampler:
        status, body, _sent, seconds = _upload(live_url, size, chunked=False)
    assert status == 413 and body["error"]["code"] == "payload_too_large"  # type: ignore[index]
    # Neither the body in memory nor a spooled temporary file on disk: growth far below the upload's size.
    assert sampler.peak_memory - sampler.base_memory < 40 * MIB, sampler.peak_memory - sampler.base_memory
    assert sampler.peak_disk - sampler.base_disk < 40 * MIB, sampler.peak_disk - sampler.base_disk
    assert seconds < 30


def test_a_chunked_upload_is_cut_off_just_past_the_limit(live_url: str, services: Components) -> None:
    services.settings.max_upload_bytes = 2 * MIB
    with PeakSampler() as sampler:
        status, body, _sent, _seconds = _upload(live_url, 200 * MIB, chunked=True)
    assert status == 413 and body["error"]["code"] == "payload_too_large"  # type: ignore[index]
    assert sampler.peak_disk - sampler.base_disk < 40 * MIB
    assert not list(services.settings.upload_dir.iterdir())  # nothing of it was stored
