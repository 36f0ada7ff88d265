"""`vdi check` of an erasure-coded VDI's data objects: every stripe's parity
is verified, and a strip that disagrees is rebuilt from the others.

As C dog's vdi check does for erasure code: dog reads each owner's whole
strip (SD_OP_READ_PEER to the i-th owner by the ring of the current
membership, the daemons' own recipe), checks that the other strips agree
with the code, and writes a rebuilt strip back with
SD_OP_CREATE_AND_WRITE_PEER. The strips are compared a 16 KiB piece at a
time, and in each piece one strip is suspected alone: with one bad strip
there (a flipped bit, a lost or stale strip), the other D+P-1 agree with
each other and name it.
"""

from __future__ import annotations

import itertools
import sys

import click

from sheepblk import erasure_code
from sheepblk.client import ClientError
from sheepblk.placement import PlacementRing
from sheepblk.proto import ObjArgs, Op, Res, SdNode, ec, strerror

from .check import Holders
from .format import node_addr

# Bytes of each strip compared at once when the strips disagree.
CHUNK = 16 << 10


def _strip(holders: Holders, node: SdNode, oid: int, size: int, epoch: int) -> bytes | None:
    buf = bytearray(size)
    try:
        rsp, out = holders.client(node).request(
            Op.READ_PEER, ObjArgs(oid=oid).pack(), data_length=size, rbuf=buf,
            epoch=epoch, check=False)
    except ClientError:
        return None
    if rsp.result != Res.SUCCESS:
        return None
    return bytes(buf)


def consistent(strips: dict[int, bytes], d: int, p: int) -> bool:
    """Whether every strip given is what any D of them encode to."""
    if len(strips) < d:
        return False
    base = dict(itertools.islice(strips.items(), d))
    return all(erasure_code.rebuild(base, d, p, i) == s for i, s in strips.items())


def bad_strip(strips: dict[int, bytes], d: int, p: int) -> int | None:
    """The one strip whose leaving out makes the others agree (None: all
    agree, or no single strip explains the disagreement)."""
    if consistent(strips, d, p):
        return None
    for j in sorted(strips):
        rest = {i: s for i, s in strips.items() if i != j}
        if len(rest) >= d and consistent(rest, d, p):
            return j
    return -1


def repair_plan(got: dict[int, bytes], d: int, p: int) -> dict[int, bytes] | None:
    """The strips to rewrite ({index: strip}) so that `got` agrees with
    the code, or None when some part has no single bad strip. Checked a
    CHUNK of every strip at a time, so flipped bits in different strips
    (at different places) are each repaired."""
    if consistent(got, d, p):
        return {}
    length = len(next(iter(got.values())))
    fixed: dict[int, bytearray] = {}
    for off in range(0, length, CHUNK):
        part = {i: s[off:off + CHUNK] for i, s in got.items()}
        bad = bad_strip(part, d, p)
        if bad is None:
            continue
        if bad == -1:
            return None
        good = {i: s for i, s in part.items() if i != bad}
        strip = fixed.setdefault(bad, bytearray(got[bad]))
        strip[off:off + len(part[bad])] = erasure_code.rebuild(good, d, p, bad)
    return {i: bytes(s) for i, s in fixed.items()}


def check_erasure_object(holders: Holders, ring: PlacementRing, oid: int, d: int, p: int,
                         object_size: int, epoch: int) -> None:
    owners = ring.oid_to_nodes(oid, d + p)[:ring.nr_zones]
    size = ec.stored_size(object_size, d)
    got: dict[int, bytes] = {}
    stamp = 0
    for i, node in enumerate(owners):
        raw = _strip(holders, node, oid, size, epoch)
        if raw is not None and ec.trailer_index(raw, d, p) == i:
            got[i] = raw[:-ec.TRAILER_SIZE]
            stamp = max(stamp, ec.trailer_stamp(raw))
    if len(got) < d:
        print(f"{oid:x} has {len(got)} strips, {d} needed" if got else f"no node has {oid:x}",
              file=sys.stderr)
        return
    plan = repair_plan(got, d, p)
    if plan is None:
        print(f"no majority of {oid:x}: its strips disagree", file=sys.stderr)
        return
    good = {**got, **plan}
    for i in range(len(owners)):
        if i not in got:
            plan[i] = erasure_code.rebuild(good, d, p, i)
    for i in sorted(plan):
        # The stamp of the strips it agrees with: recovery decodes from
        # strips of the newest write only.
        strip = plan[i] + ec.trailer(i, d, p, stamp)
        try:
            rsp, _ = holders.client(owners[i]).request(
                Op.CREATE_AND_WRITE_PEER, ObjArgs(oid=oid, copies=d + p).pack(), data=strip,
                epoch=epoch, check=False)
            ok = rsp.result == Res.SUCCESS
            why = strerror(rsp.result)
        except ClientError as e:
            ok, why = False, str(e)
        if not ok:
            print(f"failed to repair strip {i} of {oid:016x} on {node_addr(owners[i].nid)}: "
                  f"{why}", file=sys.stderr)
            continue
        click.echo(f"fixed {'strip' if i in got else 'missing strip'} {i} of {oid:x}")
