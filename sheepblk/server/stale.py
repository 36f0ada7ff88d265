"""Stale copies: objects this node held but no longer owns, kept in
obj/.stale/OID.EPOCH (EPOCH: the last epoch it owned them) for recovery,
and dropped once nobody can need them.

Why keep them: a node that left and came back, or whose objects moved
to other owners, may hold the only copy of an object as of some epoch;
recovery (`READ_PEER` with a target epoch) reads it from here. Why drop
them only once every member has recovered an epoch: before that, some
member may still ask.
"""

from __future__ import annotations

import logging

import trio

from ..store import NoObject, ObjectStore, StoreError
from .recovery import EPOCHS_BACK
from .view import ClusterView

log = logging.getLogger("sheep")


def all_to_stale(store: ObjectStore, epoch: int) -> None:
    """Every object held moves to .stale/ as of `epoch` (a node that was
    away while the cluster ran: see Coordinator._apply_sync). Blocking."""
    moved = 0
    for oid in list(store.oids()):
        try:
            store.move_to_stale(oid, epoch)
            moved += 1
        except NoObject:
            continue
    log.info("moved %d objects to .stale/ as of epoch %d", moved, epoch)


def newest_copy(store: ObjectStore, oid: int, since: int) -> int | None:
    """The epoch of our newest stale copy of `oid` if it is at least
    `since` (the object as of epoch `since` or later), else None."""
    best = max((ep for o, ep in store.stale_copies() if o == oid), default=None)
    return best if best is not None and best >= since else None


async def purge(view: ClusterView, store: ObjectStore, epoch: int, full: bool) -> None:
    """Every member has recovered `epoch`: objects we do not own under its
    ring move to obj/.stale/OID.LAST, LAST being the last epoch we owned
    them in (the copy is the object as of that epoch), older stale copies
    of the same object go. When the recovery was `full` (no member missed
    an object), stale copies made before this epoch (LAST < epoch - 1) are
    no longer needed and are deleted. Stops early if the epoch moves on."""
    ring = view.ring_at(epoch)
    if ring is None or view.me.nr_vnodes == 0:
        return
    me = view.me.nid
    back = [(ep, r) for ep in range(epoch - 1, max(0, epoch - 1 - EPOCHS_BACK), -1)
            if (r := view.ring_at(ep)) is not None]

    def last_owned(oid: int, copies: int) -> int:
        for ep, r in back:
            if any(o.nid == me for o in r.oid_to_nodes(oid, copies)):
                return ep
        return 1

    def run() -> tuple[int, int]:
        tags: dict[int, list[int]] = {}
        for oid, ep in store.stale_copies():
            tags.setdefault(oid, []).append(ep)
        moved = dropped = 0
        for oid in list(store.oids()):
            if view.epoch != epoch:
                return moved, dropped
            copies = view.copies_of(oid)
            if any(o.nid == me for o in ring.oid_to_nodes(oid, copies)):
                continue
            tag = last_owned(oid, copies)
            try:
                store.move_to_stale(oid, tag)
                moved += 1
            except StoreError:
                continue
            for old in tags.pop(oid, []):
                if old != tag:
                    store.remove_stale(oid, old)
            tags[oid] = [tag]
        if full:
            for oid, eps in tags.items():
                for ep in eps:
                    if ep < epoch - 1 and view.epoch == epoch:
                        store.remove_stale(oid, ep)
                        dropped += 1
        return moved, dropped

    moved, dropped = await trio.to_thread.run_sync(run)
    if moved or dropped:
        log.info("epoch %d: %d objects no longer ours moved to .stale, %d older stale "
                 "copies deleted", epoch, moved, dropped)
