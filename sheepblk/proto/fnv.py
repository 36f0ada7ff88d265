"""FNV-1a hashes as Sheepdog computes them: VDI ids and ring positions."""

from __future__ import annotations

from .constants import SD_NR_VDIS

FNV1A_64_INIT = 0xCBF29CE484222325
FNV_64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv_64a_buf(data: bytes, hval: int = FNV1A_64_INIT) -> int:
    for b in data:
        hval ^= b
        hval = (hval * FNV_64_PRIME) & _MASK64
    return hval


def fnv_64a_64(value: int, hval: int) -> int:
    """fnv_64a_buf over the 8 little-endian bytes of `value`."""
    for shift in range(0, 64, 8):
        hval ^= (value >> shift) & 0xFF
        hval = (hval * FNV_64_PRIME) & _MASK64
    return hval


def sd_hash(data: bytes) -> int:
    """A ring position for a byte string (a node's first vnode)."""
    h = fnv_64a_buf(data)
    return fnv_64a_64(h, h)


def sd_hash_64(value: int) -> int:
    """sd_hash over the 8 little-endian bytes of `value`."""
    h = fnv_64a_64(value, FNV1A_64_INIT)
    return fnv_64a_64(h, h)


def sd_hash_next(hval: int) -> int:
    """The position after `hval` (a node's next vnode)."""
    return fnv_64a_64(hval, hval)


def sd_hash_oid(oid: int) -> int:
    """An object's position on the ring."""
    return sd_hash_64(oid)


def sd_hash_vdi(name: bytes | str) -> int:
    """The first VDI id tried for a name; collisions probe linearly from it."""
    if isinstance(name, str):
        name = name.encode()
    return fnv_64a_buf(name) & (SD_NR_VDIS - 1)
