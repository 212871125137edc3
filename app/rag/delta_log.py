"""The append-only delta log of one collection's vectors: what changed since its base snapshot.

The layout (little-endian), chosen so that a crash can only ever leave the last record torn::

    header  := b"WENDAVL1" | u32 dim | u64 generation | u8 continues | u32 crc32(the 25 bytes before it)
    record  := u32 payload length | u32 crc32(payload) | payload
    payload := b"A" | u32 count | int64 ids[count] | float32 vectors[count × dim]   (add, replacing those ids)
             | b"R" | u32 count | int64 ids[count]                                 (remove)

A writer appends a record with one write and fsyncs it before returning. A reader takes records up to the
first one that is short or fails its checksum and tries again from there later: that is either a record still
being written, or the torn tail a crashed writer left, which the next writer truncates before appending.

Every record sets its ids to a vector or to absent, so applying a log to a state that already reflects some
prefix of it gives the same result as applying it once. Compaction relies on this (``app.rag.faiss_store``).

``generation`` counts the logs a collection has had; ``continues`` says that this log's base snapshot is the
previous generation's base with that whole log applied (a compaction), as opposed to an unrelated rebuild.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAGIC = b"WENDAVL1"
_HEADER_BODY = struct.Struct("<8sIQB")
_CHECKSUM = struct.Struct("<I")
HEADER_SIZE = _HEADER_BODY.size + _CHECKSUM.size
_RECORD_PREFIX = struct.Struct("<II")
_COUNT = struct.Struct("<I")
_ADD = b"A"
_REMOVE = b"R"

Ids = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]


class LogCorruptError(Exception):
    """The log cannot be read: a bad header, or a record whose checksum holds but whose content does not."""


@dataclass(frozen=True)
class LogHeader:
    dim: int
    generation: int
    continues: bool


@dataclass(frozen=True)
class AddRecord:
    ids: Ids
    vectors: Matrix


@dataclass(frozen=True)
class RemoveRecord:
    ids: Ids


LogRecord = AddRecord | RemoveRecord


def encode_header(header: LogHeader) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, header.dim, header.generation, int(header.continues))
    return body + _CHECKSUM.pack(zlib.crc32(body))


def decode_header(data: bytes) -> LogHeader:
    if len(data) < HEADER_SIZE:
        raise LogCorruptError(f"log header is {len(data)} bytes, expected {HEADER_SIZE}")
    body = data[: _HEADER_BODY.size]
    (checksum,) = _CHECKSUM.unpack_from(data, _HEADER_BODY.size)
    magic, dim, generation, continues = _HEADER_BODY.unpack(body)
    if magic != MAGIC or checksum != zlib.crc32(body) or continues not in (0, 1):
        raise LogCorruptError("not a wenda vector log header")
    return LogHeader(dim=dim, generation=generation, continues=bool(continues))


def encode_add(ids: Ids, vectors: Matrix) -> bytes:
    payload = b"".join(
        (
            _ADD,
            _COUNT.pack(len(ids)),
            np.ascontiguousarray(ids, dtype="<i8").tobytes(),
            np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
        )
    )
    return _frame(payload)


def encode_remove(ids: Ids) -> bytes:
    return _frame(
        b"".join((_REMOVE, _COUNT.pack(len(ids)), np.ascontiguousarray(ids, dtype="<i8").tobytes()))
    )


def _frame(payload: bytes) -> bytes:
    return _RECORD_PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes, *, dim: int) -> tuple[list[LogRecord], int]:
    """The whole records at the start of ``data`` and how many bytes they take; the rest is a record still
    being written or a torn tail."""
    records: list[LogRecord] = []
    position = 0
    view = memoryview(data)
    while len(data) - position >= _RECORD_PREFIX.size:
        length, checksum = _RECORD_PREFIX.unpack_from(data, position)
        start = position + _RECORD_PREFIX.size
        end = start + length
        if end > len(data) or zlib.crc32(view[start:end]) != checksum:
            break
        records.append(_decode_payload(view[start:end], dim=dim))
        position = end
    return records, position


def _decode_payload(payload: memoryview, *, dim: int) -> LogRecord:
    head = _COUNT.size + 1
    if len(payload) < head:
        raise LogCorruptError("log record too short")
    kind = bytes(payload[:1])
    (count,) = _COUNT.unpack_from(payload, 1)
    ids_end = head + 8 * count
    # Copies: the caller keeps the records after ``data`` is gone, and FAISS wants writable arrays.
    ids = np.frombuffer(payload[head:ids_end], dtype="<i8").astype(np.int64)
    if kind == _REMOVE and len(payload) == ids_end:
        return RemoveRecord(ids=ids)
    if kind == _ADD and len(payload) == ids_end + 4 * count * dim:
        vectors = np.frombuffer(payload[ids_end:], dtype="<f4").astype(np.float32).reshape(count, dim)
        return AddRecord(ids=ids, vectors=vectors)
    raise LogCorruptError(f"log record of kind {kind!r} for {count} ids has {len(payload)} bytes")
