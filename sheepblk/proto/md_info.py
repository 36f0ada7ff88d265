"""struct sd_md_info (SD_OP_MD_INFO's answer), as Sheepdog 1.0 lays it out:
64 x {int idx; u64 free; u64 used; char path[PATH_MAX]} then int nr."""

from __future__ import annotations

import struct
from pathlib import Path

PATH_MAX = 4096
MD_MAX_DISK = 64
_MD_INFO = struct.Struct(f"<i4xQQ{PATH_MAX}s")
_NR = struct.Struct("<i4x")
MD_INFO_SIZE = MD_MAX_DISK * _MD_INFO.size + _NR.size  # 263688


def pack_md_info(disks: list[tuple[int, Path, int, int]]) -> bytes:
    body = bytearray(MD_INFO_SIZE)
    for slot, (idx, path, free, used) in enumerate(disks[:MD_MAX_DISK]):
        _MD_INFO.pack_into(body, slot * _MD_INFO.size, idx, free, used,
                           str(path).encode()[:PATH_MAX - 1])
    _NR.pack_into(body, MD_MAX_DISK * _MD_INFO.size, min(len(disks), MD_MAX_DISK))
    return bytes(body)


def unpack_md_info(raw: bytes | memoryview) -> list[tuple[int, str, int, int]]:
    """(idx, path, free, used) per disk: what dog prints."""
    (nr,) = _NR.unpack_from(raw, MD_MAX_DISK * _MD_INFO.size)
    out = []
    for slot in range(min(nr, MD_MAX_DISK)):
        idx, free, used, path = _MD_INFO.unpack_from(raw, slot * _MD_INFO.size)
        out.append((idx, path.split(b"\0", 1)[0].decode(errors="replace"), free, used))
    return out
