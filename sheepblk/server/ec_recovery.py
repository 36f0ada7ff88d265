"""Recovery of an erasure-coded object's strip (sheep/recovery.c's
recover_erasure_object): the strip this node should hold by the new ring
is rebuilt from any D strips of the object.

Which strip a copy is cannot be told from where it lives: a node's
position among an object's owners, which is its strip index, moves when
the membership does. So every stored strip ends with a trailer naming
its index (proto/ec.py), and a rebuild reads whole stored strips.

A node whose index moved keeps its old strip aside as a stale copy
(obj/.stale/OID.EPOCH) before it stores the new one: with only D strips
alive, two nodes trading indices would otherwise leave fewer than D
distinct strips for a moment. A READ_PEER that asks for a given strip
(`ObjArgs.reserved == WANT_STRIP`, the index in `ec_index`) is answered
from obj/ or from such a stale copy, whichever holds that index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from .. import erasure_code
from ..proto import SD_SHEEP_PROTO_VER, ObjArgs, Op, Request, Res, SdNode, ec
from ..store import NoObject, ObjectStore, StoreError
from .peer_client import PeerError

if TYPE_CHECKING:
    from .recovery import Recovery
    from .view import ClusterView

log = logging.getLogger("sheep.recovery")

# ObjArgs.reserved of a READ_PEER that wants the strip named in ec_index.
WANT_STRIP = 1


def index_of(nid: object, owners: Sequence[SdNode]) -> int | None:
    return next((i for i, n in enumerate(owners) if n.nid == nid), None)


def holds_wanted_strip(view: ClusterView, store: ObjectStore, oid: int, me: object,
                       owners: Sequence[SdNode]) -> bool:
    """Whether our copy is the strip the new ring wants here (always, for
    a replicated object). Read from the copy's trailer, not guessed from
    the rings: a recovery that could not rebuild (too few strips) left
    the strip of an older position."""
    code = view.ec_of(oid)
    if code is None:
        return True
    size = view.stored_size(oid)
    raw = memoryview(bytearray(ec.TRAILER_SIZE))
    try:
        store.read_into(oid, size - ec.TRAILER_SIZE, raw)
    except StoreError:
        return False
    return ec.trailer_index(raw, *code) == index_of(me, owners)


def find_strip(store: ObjectStore, oid: int, index: int, buf: memoryview,
               d: int, p: int) -> None:
    """Runs in a worker thread: fill `buf` (a whole stored strip) with our
    strip `index` of `oid`, from obj/ or the newest stale copy that is it;
    NoObject when we hold no such strip."""
    try:
        store.read_into(oid, 0, buf)
        if ec.trailer_index(buf, d, p) == index:
            return
    except NoObject:
        pass
    for ep in sorted((e for o, e in store.stale_copies() if o == oid), reverse=True):
        try:
            store.read_stale(oid, ep, buf)
        except StoreError:
            continue
        if ec.trailer_index(buf, d, p) == index:
            return
    raise NoObject(f"no strip {index} of {oid:016x} here")


async def _remote(rec: Recovery, src: SdNode, oid: int, size: int, epoch: int,
                  tgt: int, want: int | None = None, offset: int = 0) -> bytearray | None:
    """`size` bytes at `offset` of `src`'s strip (`want`: the strip of
    that index, from obj/ or one kept aside), None if it gave none."""
    buf = bytearray(size)
    args = ObjArgs(oid=oid, tgt_epoch=tgt, ec_index=want or 0, offset=offset,
                   reserved=WANT_STRIP if want is not None else 0)
    req = Request(Op.READ_PEER, 0, epoch, 0, size, args.pack(), SD_SHEEP_PROTO_VER)
    try:
        rsp, n = await rec.peers.request(src.nid, req, None, memoryview(buf))
    except PeerError:
        return None
    if rsp.result != Res.SUCCESS or n < size:
        return None
    return buf


def _newest(found: dict[int, tuple[int, bytes]], d: int) -> dict[int, bytes]:
    """The strips of the newest stamp that D strips share: a strip of an
    older stamp missed a write the others took (its node was away)."""
    for stamp in sorted({s for s, _ in found.values()}, reverse=True):
        got = {i: b for i, (s, b) in found.items() if s == stamp}
        if len(got) >= d:
            return got
        if got:
            # Fewer than D strips saw the newest write: an unacknowledged
            # write (it reached only some owners), or strips lost with
            # their nodes. Nothing older can stand in for them.
            return got
    return {}


async def _set_aside(rec: Recovery, oid: int, epoch: int) -> None:
    """Move our strip of `oid` to the stale copies (named by the epoch
    before: it is the object as of then, at best)."""
    try:
        await trio.to_thread.run_sync(rec.store.move_to_stale, oid, max(1, epoch - 1))
    except StoreError as e:
        log.debug("keeping the old strip of %016x aside: %s", oid, e)


async def rebuild(rec: Recovery, epoch: int, sources: Sequence[tuple[SdNode, int]],
                  oid: int) -> bool:
    """Store here the strip of `oid` that the ring of `epoch` gives this
    node, decoded from strips read from `sources` ((node, tgt_epoch), the
    freshest first), then from strips kept aside anywhere. Only strips
    of the newest stamp (the epoch of the last write) are decoded: a
    node back from an absence holds a strip that missed writes. False
    when fewer than D such strips could be found."""
    view = rec.view
    code = view.ec_of(oid)
    ring = view.ring_at(epoch) or view.current_ring()
    assert code is not None
    d, p = code
    me = view.me
    mine = index_of(me.nid, view.owners_in(ring, oid))
    if mine is None:
        return True  # not ours at this epoch: nothing to hold
    size = view.stored_size(oid)
    # index -> (stamp, strip): the newest of each strip we can read.
    found: dict[int, tuple[int, bytes]] = {}

    def take(raw: bytearray | memoryview | None) -> None:
        if raw is None:
            return
        idx = ec.trailer_index(raw, d, p)
        if idx is None:
            return
        # A strip stamped at this epoch took a write after its node was
        # ready: the writes of this epoch reach us too, after this rebuild
        # (they wait for it), and rewrite whole stripes, so it counts as
        # of the epoch before.
        stamp = min(ec.trailer_stamp(raw), epoch - 1)
        if idx not in found or found[idx][0] < stamp:
            found[idx] = (stamp, bytes(raw[:-ec.TRAILER_SIZE]))

    if ring.nr_zones < d:
        return False  # fewer strips alive than a decode needs: change nothing
    ours = bytearray(size)
    local: bytearray | None = ours
    try:
        await trio.to_thread.run_sync(rec.store.read_into, oid, 0, memoryview(ours))
        take(ours)
    except StoreError:
        local = None
    # First the trailers of the others' strips (12 bytes each), then whole
    # strips only from as many of the newest as a decode needs.
    offers: dict[int, list[tuple[int, SdNode, int]]] = {}  # idx -> (stamp, node, tgt)
    for src, tgt in sources:
        if src.nid == me.nid:
            buf = bytearray(size)
            try:
                await trio.to_thread.run_sync(rec.store.read_stale, oid, tgt, memoryview(buf))
            except StoreError:
                continue
            take(buf)
            continue
        raw = await _remote(rec, src, oid, ec.TRAILER_SIZE, epoch, tgt,
                            offset=size - ec.TRAILER_SIZE)
        idx = ec.trailer_index(raw, d, p) if raw is not None else None
        if raw is not None and idx is not None:
            offers.setdefault(idx, []).append(
                (min(ec.trailer_stamp(raw), epoch - 1), src, tgt))
    newest = max([st for st, _ in found.values()]
                 + [st for offs in offers.values() for st, _, _ in offs], default=0)
    for idx in sorted(offers, key=lambda i: i != mine):
        if len([i for i, (st, _) in found.items() if st == newest]) >= d:
            break
        if idx in found and found[idx][0] == newest:
            continue
        for st, src, tgt in offers[idx]:
            if st == newest:
                take(await _remote(rec, src, oid, size, epoch, tgt))
                if idx in found and found[idx][0] == newest:
                    break
    got = _newest(found, d)
    if len(got) < d:
        # Strips kept aside by nodes whose index moved.
        others = [n for n in view.members if n.nid != me.nid]
        for j in range(d + p):
            if j in got:
                continue
            buf = bytearray(size)
            try:
                await trio.to_thread.run_sync(find_strip, rec.store, oid, j, memoryview(buf), d, p)
                take(buf)
            except StoreError:
                pass
            for n in others:
                take(await _remote(rec, n, oid, size, epoch, max(1, epoch - 1), want=j))
        got = _newest(found, d)
    stamp = max((found[i][0] for i in got), default=0)
    if local is not None and ec.trailer_index(local, d, p) == mine and found.get(mine) == (
            stamp, bytes(local[:-ec.TRAILER_SIZE])):
        return True  # ours is the strip wanted here, as of the newest write
    if len(got) < d:
        log.warning("epoch %d: %d strips of %016x of its last write found, %d needed",
                    epoch, len(got), oid, d)
        if local is not None:
            # Not the strip wanted here, or one that missed writes: never
            # served as if it were (reads decode from the others).
            await _set_aside(rec, oid, epoch)
        return False
    strip = erasure_code.rebuild(got, d, p, mine) + ec.trailer(mine, d, p, stamp)
    if view.epoch != epoch and rec.current is not None and rec.current.epoch != epoch:
        return True  # superseded: the next run decides which strip is ours
    if local is not None:
        await _set_aside(rec, oid, epoch)
    await rec.peer.create_and_write(oid, 0, memoryview(strip), size, sync=False)
    log.debug("epoch %d: rebuilt strip %d of %016x from strips %s", epoch, mine, oid,
              sorted(got))
    return True
