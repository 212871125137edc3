"""The fault probe, rerun: hostile and careless inputs against a real `wenda serve`, one table of outcomes.

It starts `wenda serve` (SQLite, the bundled embedder and chat model, the default worker threads) on a fresh
temporary data directory and a loopback port, waits for /readyz, then sends each input of the fault probe that
issue 13 reports: zip, XML-entity and PDF bombs, a PDF whose page tree loops, polyglots, traversal and NUL
filenames, deeply nested and lone-surrogate metadata, unpunctuated Chinese, 200 concurrent uploads, blank and
out-of-corpus questions. For each it records the HTTP status, the job's outcome (status and error) where there
is one, the time to that outcome, and the server process's peak resident memory while it ran (VmHWM, reset
before each input through /proc/PID/clear_refs; parsing children are processes of their own and not
counted). Database faults need a TCP proxy between wenda and PostgreSQL: `tests/integration/
test_database_faults.py` runs them.

Run from the repository root::

    python bench/probe.py --model-dir DATA/models/qwen2.5-coder-0.5b-instruct   # a prepared model folder

Prints the table, then one JSON line with every row.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

DOCX_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/'
    'document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.'
    'main+xml"/></Types>'
)
DOCX_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
    '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)


def _docx(document_xml: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", DOCX_TYPES)
        archive.writestr("_rels/.rels", DOCX_RELS)
        archive.writestr("word/document.xml", document_xml)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _body_xml(inner: str, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>{doctype}<w:document xmlns:w="http://schemas.openxmlformats.org/'
        f'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{inner}</w:t></w:r></w:p></w:body></w:document>'
    ).encode()


def zip_bomb() -> bytes:
    # word/document.xml itself inflates to 1 GB of spaces: a few MB on the wire.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", DOCX_TYPES)
        archive.writestr("_rels/.rels", DOCX_RELS)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(_body_xml("x")[:-30])
            block = b" " * (1 << 20)
            for _ in range(1024):
                member.write(block)
    return buffer.getvalue()


def billion_laughs() -> bytes:
    entities = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    return _docx(_body_xml("&a9;", f"<!DOCTYPE w:document [{entities}]>"))


def external_entity() -> bytes:
    return _docx(_body_xml("&x;", '<!DOCTYPE w:document [<!ENTITY x SYSTEM "file:///etc/passwd">]>'))


def pdf(objects: list[bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def pdf_bomb() -> bytes:
    # One page whose content stream inflates to 512 MB.
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(b"0 0 m " * 65536) for _ in range(1365)) + compressor.flush()
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream",
        ]
    )


def pdf_loop() -> bytes:
    # The page tree's only kid is the tree itself.
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class Probe:
    def __init__(self, client: httpx.Client, pid: int) -> None:
        self.client = client
        self.pid = pid
        self.rows: list[dict[str, Any]] = []

    def wait_job(self, job_id: int, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)

    def case(self, name: str, run: Callable[[], tuple[int | str, str]]) -> None:
        _reset_peak(self.pid)
        began = time.monotonic()
        try:
            status, outcome = run()
        except Exception as error:  # a probe reports, it does not stop
            status, outcome = "error", f"{type(error).__name__}: {error}"
        row = {
            "input": name,
            "status": status,
            "outcome": outcome,
            "seconds": round(time.monotonic() - began, 2),
            "server_peak_rss_mb": round(_peak_rss_mb(self.pid), 1),
        }
        self.rows.append(row)
        print(f"{name:44} {status!s:>5} {row['seconds']:>8} s {row['server_peak_rss_mb']:>8} MB  {outcome}")

    def upload(self, filename: str, data: bytes, **form: str) -> tuple[int | str, str]:
        response = self.client.post(
            "/v1/collections/probe/documents", files={"file": (filename, data)}, data=form or None
        )
        body = response.json()
        if response.status_code >= 400:
            return response.status_code, f"{body['error']['code']}: {body['error']['message'][:90]}"
        job = self.wait_job(body["job_id"]) if body.get("job_id") else {"status": body["status"], "error": None}
        detail = f"job {job['status']}" + (f": {job['error'][:90]}" if job.get("error") else "")
        if body.get("notes"):
            detail += f"; stored as {body['filename']!r} ({'; '.join(body['notes'])[:60]})"
        return response.status_code, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a prepared chat model folder")
    parser.add_argument("--unpunctuated-mb", type=float, default=1.0, help="size of the unpunctuated document")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wenda-probe-") as data_dir:
        port = _free_port()
        env = {
            **os.environ,
            "WENDA_DATA_DIR": data_dir,
            "WENDA_LLM__LOCAL_MODEL_DIR": str(args.model_dir),
            "WENDA_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                deadline = time.monotonic() + 300
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "not ready within 300 s"
                    time.sleep(0.5)
                probe = Probe(client, server.pid)
                run_cases(probe, args)
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps({"benchmark": "probe", "rows": probe.rows}, ensure_ascii=False))


def run_cases(probe: Probe, args: argparse.Namespace) -> None:
    corpus = sorted((ROOT.parent / "shared/eval/dev/answers-en/corpus").iterdir())
    probe.case("a real document (baseline)", lambda: probe.upload(corpus[0].name, corpus[0].read_bytes()))
    probe.case("zip bomb .docx (1 GB inflated)", lambda: probe.upload("bomb.docx", zip_bomb()))
    probe.case("XML billion laughs .docx", lambda: probe.upload("laughs.docx", billion_laughs()))
    probe.case("XML external entity .docx", lambda: probe.upload("xxe.docx", external_entity()))
    probe.case("PDF bomb (512 MB stream)", lambda: probe.upload("bomb.pdf", pdf_bomb()))
    probe.case("PDF page tree loop", lambda: probe.upload("loop.pdf", pdf_loop()))
    probe.case("polyglot: PDF bytes named .txt", lambda: probe.upload("poly.txt", pdf_loop()))
    probe.case("polyglot: .docx (zip) bytes named .pdf", lambda: probe.upload("poly.pdf", external_entity()))
    probe.case("traversal name ../../etc/x.txt", lambda: probe.upload("../../etc/x.txt", b"traversal"))
    probe.case("NUL in the filename", lambda: probe.upload("a\x00b.txt", b"nul name"))
    probe.case("600-character filename", lambda: probe.upload("n" * 600 + ".txt", b"long name"))
    probe.case(
        "metadata nested 10,000 deep",
        lambda: probe.upload("m.txt", b"meta", metadata='{"k":' + "[" * 10_000 + "]" * 10_000 + "}"),
    )
    probe.case("metadata with a lone surrogate", lambda: probe.upload("s.txt", b"sur", metadata='{"k":"\\ud800"}'))
    chars = int(args.unpunctuated_mb * 1_000_000 / 3)
    probe.case(
        f"{args.unpunctuated_mb:g} MB unpunctuated Chinese",
        lambda: probe.upload("flat.txt", ("啊" * chars).encode()),
    )

    def concurrent_uploads() -> tuple[int | str, str]:
        def one(i: int) -> int:
            return probe.client.post(
                "/v1/collections/many/documents", files={"file": (f"n{i}.txt", f"第{i}号文件。内容{i}。".encode())}
            ).status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(one, range(200)))
        listing = probe.client.get("/v1/collections/many/documents", params={"limit": 500}).json()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            listing = probe.client.get("/v1/collections/many/documents", params={"limit": 500}).json()
            statuses = [d["status"] for d in listing["documents"]]
            if all(s in ("ready", "failed") for s in statuses):
                break
            time.sleep(0.5)
        return 202 if set(codes) == {202} else str(sorted(set(codes))), (
            f"{codes.count(202)} accepted; {statuses.count('ready')} ready, {statuses.count('failed')} failed"
        )

    probe.case("200 concurrent uploads", concurrent_uploads)

    def ask(question: str) -> tuple[int | str, str]:
        response = probe.client.post("/v1/ask", json={"collection": "probe", "question": question})
        body = response.json()
        if response.status_code >= 400:
            return response.status_code, f"{body['error']['code']}: {body['error']['message'][:80]}"
        refusal = body.get("refusal") or {}
        return response.status_code, f"grounded={body['grounded']} refusal={refusal.get('reason')}"

    probe.case("blank question", lambda: ask("   "))
    probe.case("out-of-corpus English name (exFAT)", lambda: ask("How do I format the backup disk as exFAT?"))
    probe.case("out-of-corpus English name (rsyncd)", lambda: ask("How do I configure rsyncd?"))


if __name__ == "__main__":
    main()
