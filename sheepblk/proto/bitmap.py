"""The VDI bitmaps READ_VDIS and READ_DEL_VDIS carry: SD_NR_VDIS bits, the
bit of id `nr` being bit `nr & 7` of byte `nr >> 3` (Sheepdog's array of
little-endian longs, read as bytes)."""

from __future__ import annotations

import re

_NONZERO = re.compile(rb"[^\x00]")


def bitmap_ids(bitmap: bytes | bytearray | memoryview) -> list[int]:
    """The ids whose bits are set, ascending. Why a regex: the bitmap is
    2 MiB with a handful of bits set at hashed positions, so the scan for
    non-zero bytes runs in C (a Python loop over every byte takes ~0.15 s)."""
    data = bytes(bitmap) if isinstance(bitmap, memoryview) else bitmap
    out: list[int] = []
    for m in _NONZERO.finditer(data):
        pos = m.start()
        byte = data[pos]
        out.extend(pos * 8 + b for b in range(8) if byte & (1 << b))
    return out


def bitmap_test(bitmap: bytes | bytearray, nr: int) -> bool:
    """Whether id `nr`'s bit is set."""
    return bool(bitmap[nr >> 3] & (1 << (nr & 7)))
