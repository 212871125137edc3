"""The page's hand-written Server-Sent Events reader (app/web/static/sse.js), run by Node on streams cut at
awkward places: a CRLF and a Chinese character split between network chunks, comments, multi-line data,
and an event the stream ends inside."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from app.api.web import STATIC_DIR

NODE = shutil.which("node")

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


def read_events(chunks: list[bytes]) -> list[dict[str, str]]:
    assert NODE is not None
    script = SCRIPT % {
        "module": json.dumps((STATIC_DIR / "sse.js").as_uri()),
        "chunks": json.dumps([list(chunk) for chunk in chunks]),
    }
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    events: list[dict[str, str]] = json.loads(done.stdout)
    return events


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_events_survive_awkward_chunk_boundaries() -> None:
    wire = (
        ': ping\r\nevent: delta\r\ndata: {"text": "年假"}\r\n\r\n'
        "data: first\ndata:second\n\n"
        "event: done\rdata: x\r\r"
        "event: lost\ndata: never dispatched"
    ).encode()
    year = wire.index("年".encode())
    cuts = [wire.index(b"delta\r\n") + len(b"delta\r"), year + 1, year + 4, wire.index(b"\r\r") + 1]
    chunks = [wire[start:end] for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert read_events(chunks) == [
        {"event": "delta", "data": '{"text": "年假"}'},
        {"event": "message", "data": "first\nsecond"},
        {"event": "done", "data": "x"},
    ]
