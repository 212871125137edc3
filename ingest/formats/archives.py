"""Open the ZIP containers of office documents and books (XLSX, PPTX, ODF, EPUB) without trusting them.

A ZIP's central directory declares each member's size before anything is inflated, so a zip bomb is refused
here, from the directory alone; and members are read through ``read_member``, which stops at the declared
size even when the archive lies about it. The XML inside is parsed by each library with entity expansion and
external entities off (``defusedxml`` for openpyxl, lxml parsers with ``resolve_entities=False`` for
python-pptx, python-docx and ours); ``safe_xml_parser`` is that parser for code of our own.
"""

from __future__ import annotations

import io
import zipfile

from lxml import etree

from app.rag.errors import DocumentParseError

# No document we read has more members than this; a bomb made of many tiny members has far more.
MAX_MEMBERS = 10_000
# What the members may add up to once inflated. The parse child's memory limit (2 GiB by default) must also
# hold the parsed text and the library's objects, which take several times the XML they came from.
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
# Deflate reaches ~1000:1 only on runs of one byte; real XML compresses 5-20:1. A member over this ratio and
# over a megabyte is a bomb.
MAX_RATIO = 200
_RATIO_FLOOR_BYTES = 1024 * 1024


def open_zip(data: bytes, label: str) -> zipfile.ZipFile:
    """The archive, once its directory says it is safe to inflate; ``DocumentParseError`` otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DocumentParseError(f"the {label} file is not a readable ZIP archive; it may be damaged") from exc
    if len(members) > MAX_MEMBERS:
        raise DocumentParseError(
            f"the {label} file holds {len(members):,} parts, over the limit of {MAX_MEMBERS:,}; it is not a "
            "document we can read safely"
        )
    total = sum(member.file_size for member in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise DocumentParseError(
            f"the {label} file would inflate to {total / 2**20:,.0f} MiB, over the limit of "
            f"{MAX_UNCOMPRESSED_BYTES / 2**20:,.0f} MiB"
        )
    for member in members:
        if member.file_size > _RATIO_FLOOR_BYTES and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise DocumentParseError(
                f"the {label} file has a part that inflates {member.file_size // max(member.compress_size, 1):,} "
                "times over; it looks like a zip bomb"
            )
    return archive


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, never more than its declared size (a lying header cannot make it inflate further)."""
    info = archive.getinfo(name)
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise DocumentParseError("the archive's parts are larger than it declares; it may be damaged or hostile")
    return data


def safe_xml_parser() -> etree.XMLParser:
    """An lxml parser that never expands entities, reads DTDs or the network, or builds huge trees."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )
