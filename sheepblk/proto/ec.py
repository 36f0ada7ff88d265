"""Erasure coding of data objects: D data strips + P parity strips.

The layout is Sheepdog 1.0's (include/fec.h, sheep/gateway.c): an object
is a run of 512-byte stripes (SD_EC_DATA_STRIPE_SIZE, a sector, so an
aligned sector write never has to read anything first); stripe s is cut
into D pieces of 512/D bytes, piece i of every stripe goes, in stripe
order, to data strip i, and P parity strips hold the Reed-Solomon check
bytes of each stripe. Strip i is stored on the i-th owner of the object
(the ring's walk over distinct zones), so a node holds 1/D of the object.
Any D of the D+P strips give the object back.

The code itself (zfec's Reed-Solomon) is in sheepblk/erasure_code.py:
this package imports nothing but the standard library.

A strip as a store keeps it ends with a 12-byte trailer naming its index
(and D, P): a node's position among an object's owners changes when the
membership does, and recovery must know which strip a copy it reads is
(Sheepdog keeps ec_index in an xattr; our stores have no xattrs). The
trailer also holds the epoch of the strip's last write (its stamp):
recovery decodes from strips of the newest stamp only, so a node that
missed writes while it was away cannot lend its old strip to a decode.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

STRIPE = 512  # SD_EC_DATA_STRIPE_SIZE
MAX_STRIPS = 16  # SD_EC_MAX_STRIP: parity strips are fewer than this
DATA_STRIPS = (2, 4, 8, 16)

_TRAILER = struct.Struct("<4sBBBBI")
TRAILER_SIZE = _TRAILER.size
_MAGIC = b"SDEC"

Buffer = bytes | bytearray | memoryview


class PolicyError(ValueError):
    """A copy policy that is not an erasure code dog can make."""


def policy_dp(policy: int) -> tuple[int, int]:
    """(D, P) of a nonzero copy_policy byte: (D/2) << 4 | P (ec_policy_to_dp)."""
    d, p = (policy >> 4) * 2, policy & 0x0F
    if d not in DATA_STRIPS or not 0 < p < MAX_STRIPS or policy >= 0x100:
        raise PolicyError(f"copy policy {policy:#x} is not an erasure code")
    return d, p


def policy_of(d: int, p: int) -> int:
    """The copy_policy byte of D:P (dog's parse_copy)."""
    if d not in DATA_STRIPS or not 0 < p < MAX_STRIPS:
        raise PolicyError(f"{d}:{p} is not an erasure code (D in 2, 4, 8, 16; P in 1..15)")
    return ((d // 2) << 4) | p


def width(d: int) -> int:
    """Bytes of one stripe in each strip."""
    return STRIPE // d


def strip_size(object_size: int, d: int) -> int:
    """The bytes of one strip of an object (without its trailer)."""
    return object_size // d


def stored_size(object_size: int, d: int) -> int:
    """What a store keeps of one strip: the strip and its trailer."""
    return object_size // d + TRAILER_SIZE


def stripes(offset: int, length: int) -> tuple[int, int]:
    """(first stripe, number of stripes) that bytes [offset, offset+length) touch."""
    first = offset // STRIPE
    end = -(-(offset + length) // STRIPE)
    return first, max(0, end - first)


def split(data: Buffer, d: int) -> list[bytes]:
    """The D data strips of whole stripes `data` (len a multiple of STRIPE)."""
    w = width(d)
    mv = memoryview(data)
    n = len(mv) // STRIPE
    return [b"".join([mv[s * STRIPE + i * w:s * STRIPE + (i + 1) * w] for s in range(n)])
            for i in range(d)]


def join(strips: Sequence[Buffer], d: int) -> bytes:
    """Whole stripes from their D data strips (split's inverse)."""
    w = width(d)
    views = [memoryview(s) for s in strips[:d]]
    n = len(views[0]) // w
    return b"".join([v[s * w:(s + 1) * w] for s in range(n) for v in views])


def trailer(index: int, d: int, p: int, stamp: int = 0) -> bytes:
    """The bytes after a stored strip: which strip it is, and the epoch
    of its last write."""
    return _TRAILER.pack(_MAGIC, index, d, p, 0, stamp)


def trailer_stamp(raw: Buffer) -> int:
    """The epoch of a stored strip's last write (0 if none is named)."""
    if len(raw) < TRAILER_SIZE:
        return 0
    return int(_TRAILER.unpack_from(bytes(raw[-TRAILER_SIZE:]))[5])


def trailer_index(raw: Buffer, d: int, p: int) -> int | None:
    """The strip index a trailer names; None for one that is not ours
    (never written, or of another code)."""
    if len(raw) < TRAILER_SIZE:
        return None
    magic, index, td, tp, _, _ = _TRAILER.unpack_from(bytes(raw[-TRAILER_SIZE:]))
    if magic != _MAGIC or (td, tp) != (d, p) or index >= d + p:
        return None
    return int(index)
