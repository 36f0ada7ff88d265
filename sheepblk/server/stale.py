"""Stale copies: objects this node held but no longer owns, kept in
obj/.stale/OID.EPOCH (EPOCH: the last epoch it owned them) for recovery,
and dropped once nobody can need them.

Why keep them: a node that left and came back, or whose objects moved
to other owners, may hold the only copy of an object as of some epoch;
recovery (`READ_PEER` with a target epoch) reads it from here. Why drop
them only once every member has recovered an epoch: before that, some
member may still ask.

When every member recovered the current epoch and none missed an object
(a `full` recovery), every object has all its copies on its owners, so
nothing here can be the last copy of anything: as Sheepdog's
cluster_recovery_completion then purges every .stale/ directory
(default_cleanup), we delete every stale copy and every object we do
not own. After a recovery that missed objects, they stay.
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
    """Every member has recovered `epoch`. When the recovery was `full`
    (no member missed an object), objects we do not own under its ring and
    every stale copy are deleted (Sheepdog's cleanup at the end of a
    recovery). Otherwise objects we do not own move to obj/.stale/OID.LAST,
    LAST being the last epoch we owned them in (the copy is the object as
    of that epoch), older stale copies of the same object go, and the
    other stale copies stay: one may be the last copy of an object some
    member missed. Stops early if the epoch moves on."""
    ring = view.ring_at(epoch)
    if ring is None or view.me.nr_vnodes == 0:
        return
    me = view.me.nid
    back = [(ep, r) for ep in range(epoch - 1, max(0, epoch - 1 - EPOCHS_BACK), -1)
            if (r := view.ring_at(ep)) is not None]

    def last_owned(oid: int, copies: int) -> int:
        for ep, r in back:
            if any(o.nid == me for o in view.owners_in(r, oid, copies)):
                return ep
        return 1

    def not_ours() -> list[int]:
        out = []
        for oid in list(store.oids()):
            copies = view.copies_of(oid)
            if not any(o.nid == me for o in view.owners_in(ring, oid, copies)):
                out.append(oid)
        return out

    def clean() -> tuple[int, int]:
        removed = dropped = 0
        for oid in not_ours():
            if view.epoch != epoch:
                return removed, dropped
            try:
                store.remove(oid)
                removed += 1
            except StoreError:
                continue
        for oid, ep in list(store.stale_copies()):
            if view.epoch != epoch:
                break
            store.remove_stale(oid, ep)
            dropped += 1
        return removed, dropped

    def set_aside() -> int:
        tags: dict[int, list[int]] = {}
        for oid, ep in store.stale_copies():
            tags.setdefault(oid, []).append(ep)
        moved = 0
        for oid in not_ours():
            if view.epoch != epoch:
                break
            tag = last_owned(oid, view.copies_of(oid))
            try:
                store.move_to_stale(oid, tag)
                moved += 1
            except StoreError:
                continue
            for old in tags.pop(oid, []):
                if old != tag:
                    store.remove_stale(oid, old)
        return moved

    if full:
        removed, dropped = await trio.to_thread.run_sync(clean)
        if removed or dropped:
            log.info("epoch %d: every member recovered, %d objects no longer ours and "
                     "%d stale copies deleted", epoch, removed, dropped)
    else:
        moved = await trio.to_thread.run_sync(set_aside)
        if moved:
            log.info("epoch %d: some member missed objects, %d objects no longer ours "
                     "moved to .stale", epoch, moved)
