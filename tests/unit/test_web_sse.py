"""The page's hand-written Server-Sent Events reader (app/web/static/sse.js), run by Node on streams cut at
awkward places: a CRLF and a Chinese character split between network chunks, comments, multi-line data,
and an event the stream ends inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from app.api.web import STATIC_DIR

# Each chunk is a list of byte values, so a test can cut a UTF-8 character in two.
SCRIPT = """
import { readServerSentEvents } from %(module)s;
const chunks = %(chunks)s;
const body = new ReadableStream({
  start(controller) {
    for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
    controller.close();
  },
});
const events = [];
for await (const event of readServerSentEvents(body)) events.push(event);
console.log(JSON.stringify(events));
"""


@pytest.fixture
def node() -> str:
    """Node runs the page's module; without it the test skips, unless the run demands the browser checks
    (WENDA_REQUIRE_BROWSER=1, as CI sets), where a missing Node is a failure."""
    found = shutil.which("node")
    if found is None:
        reason = "node is not installed (Debian package nodejs)"
        if os.environ.get("WENDA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def read_events(node: str, chunks: list[bytes]) -> list[dict[str, str]]:
    script = SCRIPT % {
        "module": json.dumps((STATIC_DIR / "sse.js").as_uri()),
        "chunks": json.dumps([list(chunk) for chunk in chunks]),
    }
    done = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    events: list[dict[str, str]] = json.loads(done.stdout)
    return events


def test_events_survive_awkward_chunk_boundaries(node: str) -> None:
    wire = (
        ': ping\r\nevent: delta\r\ndata: {"text": "年假"}\r\n\r\n'
        "data: first\ndata:second\n\n"
        "event: done\rdata: x\r\r"
        "event: lost\ndata: never dispatched"
    ).encode()
    year = wire.index("年".encode())
    cuts = [wire.index(b"delta\r\n") + len(b"delta\r"), year + 1, year + 4, wire.index(b"\r\r") + 1]
    chunks = [wire[start:end] for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert read_events(node, chunks) == [
        {"event": "delta", "data": '{"text": "年假"}'},
        {"event": "message", "data": "first\nsecond"},
        {"event": "done", "data": "x"},
    ]
