"""A node's own strip of an erasure-coded object, as a peer request names it.

The gateway sends strip i of an object to the object's i-th owner with
`ObjArgs.reserved = STRIP` and `ObjArgs.ec_index = i` (Sheepdog's
sd_req.obj.ec_index). The owner checks that the strip it stores is that
one (its trailer, proto/ec.py) before it serves a read or takes a write,
and a write then stamps the trailer with the request's epoch. Why check:
a strip of another index decodes to wrong bytes without any error; a
missing-strip answer (NO_OBJ) makes the gateway decode from the others,
and a write's NoObject makes the owner rebuild its strip first.
"""

from __future__ import annotations

from ..proto import ec
from ..store import NoObject, ObjectStore

# ObjArgs.reserved of a READ_PEER / WRITE_PEER of the strip in ec_index.
STRIP = 2


def check_strip(store: ObjectStore, oid: int, stored_size: int, index: int,
                d: int, p: int) -> int:
    """NoObject unless our copy of `oid` is strip `index` of a D:P code;
    its stamp (the epoch of its last write) if it is."""
    raw = memoryview(bytearray(ec.TRAILER_SIZE))
    store.read_into(oid, stored_size - ec.TRAILER_SIZE, raw)
    got = ec.trailer_index(raw, d, p)
    if got != index:
        raise NoObject(f"{oid:016x}: strip {got} here, strip {index} asked for")
    return ec.trailer_stamp(raw)


def stamp(index: int, d: int, p: int, epoch: int) -> memoryview:
    """The trailer a write of strip `index` at `epoch` leaves."""
    return memoryview(ec.trailer(index, d, p, epoch))
