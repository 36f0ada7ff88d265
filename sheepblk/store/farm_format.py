"""The on-disk layout of one object in the `farm` backend (no I/O here).

An object file is a header, a table of chunk entries and, per chunk, two
fixed slots of `chunk_size` bytes of which one holds the chunk's bytes,
compressed:

    [header 64 B][entry 16 B x nr_chunks][pad to 4 KiB][slot 0A][slot 0B][slot 1A]...

Why fixed slots in a sparse file: a compressed chunk of 9 KiB at the start
of a 64 KiB slot leaves a hole behind it, so the file uses only what the
compressed bytes need, yet a chunk can be rewritten in place. Why two
slots: a partial write (say QEMU's 4-byte data_vdi_id update) writes the
chunk's new bytes to the slot not in use, then flips its 16-byte entry
with one aligned pwrite; a crash leaves the old entry (old bytes) or the
new one (new bytes), never half of each.

Every entry carries a CRC-32 of the stored bytes and a CRC-32 of itself
(salted with the chunk index), so a flipped bit in the data or in the
table is caught before any byte is served.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

MAGIC = b"SBFARM\x00\x01"
HEADER_SIZE = 64
ENTRY_SIZE = 16
# Data slots start on a page boundary so slot writes never share a page
# with the table.
ALIGN = 4096
# 64 KiB chunks: a 4 KiB random read decompresses at most 64 KiB (tens of
# microseconds with zstd), while chunks stay large enough for zstd to find
# the repetition in filesystem metadata and text.
CHUNK_SIZE = 64 * 1024

CODEC_ZERO = 0  # every byte zero: nothing stored (both slots are holes)
CODEC_RAW = 1  # incompressible: stored as is
CODEC_ZSTD = 2

_HEAD = struct.Struct("<8sQII")  # magic, object size, chunk size, nr chunks
_HEAD_CRC = struct.Struct("<I")
_ENTRY = struct.Struct("<BBHII")  # slot, codec, reserved, length, data crc
_ENTRY_CRC = struct.Struct("<I")
_IDX = struct.Struct("<I")


class FormatError(ValueError):
    """The header or an entry fails its checksum or makes no sense."""


class Header(NamedTuple):
    object_size: int
    chunk_size: int
    nr_chunks: int

    @classmethod
    def for_size(cls, size: int, chunk_size: int = CHUNK_SIZE) -> Header:
        return cls(size, chunk_size, (size + chunk_size - 1) // chunk_size)

    @property
    def table_end(self) -> int:
        return HEADER_SIZE + self.nr_chunks * ENTRY_SIZE

    @property
    def data_start(self) -> int:
        return (self.table_end + ALIGN - 1) // ALIGN * ALIGN

    def slot_offset(self, idx: int, slot: int) -> int:
        return self.data_start + (2 * idx + slot) * self.chunk_size

    def chunk_len(self, idx: int) -> int:
        """Bytes of chunk `idx` (the last one may be short)."""
        return min(self.chunk_size, self.object_size - idx * self.chunk_size)

    def entry_offset(self, idx: int) -> int:
        return HEADER_SIZE + idx * ENTRY_SIZE

    def pack(self) -> bytes:
        head = _HEAD.pack(MAGIC, self.object_size, self.chunk_size, self.nr_chunks)
        head += _HEAD_CRC.pack(zlib.crc32(head))
        return head.ljust(HEADER_SIZE, b"\0")

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> Header:
        if len(raw) < HEADER_SIZE:
            raise FormatError("short header")
        magic, size, chunk, nr = _HEAD.unpack_from(raw)
        (crc,) = _HEAD_CRC.unpack_from(raw, _HEAD.size)
        if magic != MAGIC or zlib.crc32(raw[:_HEAD.size]) != crc:
            raise FormatError("bad header")
        if not chunk or nr != (size + chunk - 1) // chunk:
            raise FormatError("inconsistent header")
        return cls(size, chunk, nr)


class Entry(NamedTuple):
    slot: int = 0
    codec: int = CODEC_ZERO
    length: int = 0
    crc: int = 0

    def pack(self, idx: int) -> bytes:
        body = _ENTRY.pack(self.slot, self.codec, 0, self.length, self.crc)
        return body + _ENTRY_CRC.pack(zlib.crc32(body, zlib.crc32(_IDX.pack(idx))))

    @classmethod
    def unpack(cls, raw: bytes | memoryview, idx: int, off: int = 0) -> Entry:
        body = raw[off:off + _ENTRY.size]
        (crc,) = _ENTRY_CRC.unpack_from(raw, off + _ENTRY.size)
        if zlib.crc32(body, zlib.crc32(_IDX.pack(idx))) != crc:
            raise FormatError(f"entry {idx} fails its checksum")
        slot, codec, _, length, dcrc = _ENTRY.unpack(body)
        if slot > 1 or codec > CODEC_ZSTD:
            raise FormatError(f"entry {idx} is invalid")
        return cls(slot, codec, length, dcrc)


def unpack_table(raw: bytes | memoryview, head: Header) -> list[Entry]:
    return [Entry.unpack(raw, i, head.entry_offset(i)) for i in range(head.nr_chunks)]
