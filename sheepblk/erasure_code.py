"""The erasure code of data objects: parity strips from data strips, and
the data back from any D of the D+P strips (on proto/ec.py's layout).

The code is zfec's (systematic Vandermonde Reed-Solomon over GF(2^8)), the
library Sheepdog's lib/fec.c descends from: the strips we make are the
strips C sheep makes without ISA-L. Why zfec and not pyeclib: it is a
self-contained C extension with wheels (and Debian's python3-zfec), while
pyeclib needs liberasurecode's shared library and plugins installed
beside it; and it gives Sheepdog's own strips for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import zfec

from .proto.ec import STRIPE, Buffer, join, split


@lru_cache(maxsize=32)
def _encoder(d: int, p: int) -> zfec.Encoder:
    return zfec.Encoder(d, d + p)


@lru_cache(maxsize=32)
def _decoder(d: int, p: int) -> zfec.Decoder:
    return zfec.Decoder(d, d + p)


def encode(data: Buffer, d: int, p: int) -> list[bytes]:
    """All D+P strips of whole stripes `data`: D data strips, then P parity."""
    if len(data) % STRIPE:
        raise ValueError(f"{len(data)} bytes are not whole {STRIPE}-byte stripes")
    ds = split(data, d)
    if not ds[0]:
        return [b""] * (d + p)
    parity = _encoder(d, p).encode(tuple(ds), tuple(range(d, d + p)))
    return ds + [bytes(x) for x in parity]


def data_strips(strips: Mapping[int, Buffer], d: int, p: int) -> list[Buffer]:
    """The D data strips from any D strips ({index: bytes}, equal lengths)."""
    have = sorted(i for i in strips if 0 <= i < d + p)
    if len(have) < d:
        raise ValueError(f"{len(have)} strips of {d}:{p}: {d} are needed")
    if all(i in strips for i in range(d)):
        return [strips[i] for i in range(d)]  # as they are: no copy
    # Data strips where they are (zfec wants primary blocks at their index).
    use = [i for i in have if i < d] + [i for i in have if i >= d]
    use = use[:d]
    blocks = [bytes(strips[i]) for i in use]
    if not blocks[0]:
        return [b""] * d
    got = _decoder(d, p).decode(blocks, use)
    return [bytes(b) for b in got]


def decode(strips: Mapping[int, Buffer], d: int, p: int) -> bytes:
    """Whole stripes from any D of their strips."""
    return join(data_strips(strips, d, p), d)


def rebuild(strips: Mapping[int, Buffer], d: int, p: int, index: int) -> bytes:
    """Strip `index` from any D strips."""
    if index in strips:
        return bytes(strips[index])
    ds = [bytes(s) for s in data_strips(strips, d, p)]
    if index < d:
        return ds[index]
    if not ds[0]:
        return b""
    return bytes(_encoder(d, p).encode(tuple(ds), (index,))[0])


