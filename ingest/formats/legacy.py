"""Legacy binary Office files (Word .doc, PowerPoint .ppt), converted with LibreOffice, then parsed as their
modern forms.

No maintained Python library reads .doc or .ppt text with structure; LibreOffice does, and is one package
install away (see the README). Without it, ``app.rag.filetypes.detect_file_type`` refuses these uploads with
415 and the reason, so the conversion here only runs where LibreOffice is installed. Old Excel files (.xls)
need none of this: python-calamine reads them.

LibreOffice runs as a child of the parse process, so the parse's memory, CPU and time limits bound it too;
it gets a profile directory of its own (two conversions at once would otherwise fight over the user's
profile lock) and its own process group, killed whole when the conversion overruns.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from app.rag.errors import DocumentParseError
from app.rag.filetypes import libreoffice
from app.rag.types import FileType, ParsedDocument
from ingest.formats.office import parse_pptx
from ingest.parsing import parse_docx

# A conversion of a large .doc takes seconds; the parse's own wall-clock limit (120 s by default) still rules.
_CONVERSION_SECONDS = 100.0


def parse_doc(data: bytes) -> ParsedDocument:
    return _converted(data, source="doc", target="docx", parse=parse_docx, file_type=FileType.DOC)


def parse_ppt(data: bytes) -> ParsedDocument:
    return _converted(data, source="ppt", target="pptx", parse=parse_pptx, file_type=FileType.PPT)


def _converted(
    data: bytes, *, source: str, target: str, parse: Callable[[bytes], ParsedDocument], file_type: FileType
) -> ParsedDocument:
    program = libreoffice()
    if program is None:
        raise DocumentParseError(f"LibreOffice is not installed, so .{source} files cannot be read")
    with tempfile.TemporaryDirectory(prefix="wenda-convert-") as folder:
        work = Path(folder)
        (work / f"upload.{source}").write_bytes(data)
        command = [
            program,
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(work / "out"),
            str(work / f"upload.{source}"),
        ]
        _run(command, work)
        converted = work / "out" / f"upload.{target}"
        if not converted.exists():
            raise DocumentParseError(f"LibreOffice could not convert the .{source} file; it may be damaged")
        document = parse(converted.read_bytes())
    return dataclasses.replace(document, file_type=file_type)


def _run(command: list[str], work: Path) -> None:
    environment = {**os.environ, "HOME": str(work)}
    with subprocess.Popen(
        command,
        cwd=work,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as process:
        try:
            process.wait(timeout=_CONVERSION_SECONDS)
        except subprocess.TimeoutExpired as exc:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise DocumentParseError(
                f"LibreOffice took longer than {_CONVERSION_SECONDS:.0f} s to convert the file"
            ) from exc
