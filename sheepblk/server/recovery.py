"""Recovery: after an epoch change, pull the objects this node now owns.

Why pull and not push: each node knows best what it owns under the new
ring and what it already holds, so it asks the others (SD_OP_GET_OBJ_LIST),
keeps the objects the new ring gives it, and reads each missing one from
the nodes that owned it in the previous epochs (READ_PEER with tgt_epoch),
newest epoch first. As Sheepdog's recovery.c does.

What counts as missing: an object not in obj/, or one in obj/ that this
node did not own in the previous epoch (its copy stopped receiving writes
when it lost ownership, so it may be old); such a copy is replaced, never
served. A client request for an object still to be recovered waits and
recovers that object first (`ready`). While the object list is being built
every request for an object waits (we do not know yet what is missing).

Stale copies (obj/.stale/OID.EPOCH, EPOCH being the last epoch the node
owned the object, see stale.purge) are the sources of last resort:
a previous owner that no longer has the object in obj/ answers a READ_PEER
for an old epoch from a stale copy at least that new, and when no current
copy answers, the stale copies the members report (GET_OBJ_LIST with the
wildcard flag, ours) and our own are tried, newest first. So a double
failure that leaves the only copy of an object in some .stale/ loses
nothing. Stale copies are deleted once every member recovered an epoch
without missing an object (then every object has all its copies on its
owners), as Sheepdog purges .stale/ when every node reported its
recovery done; see stale.purge.

Deleted objects do not come back: an object that no previous owner (by
the previous epoch's ring) holds, found only on nodes that were away or
held it as a leftover, is a suspect. If it is a data object that no live
inode's data_vdi_id[] names any more (its VDI was deleted, it was
discarded or freed while the holder was away), it is dropped instead of
being kept or pulled; when the inodes cannot be read (a halted cluster)
it is kept, as before.

After an unclean stop of the cluster (a node's claim says its last run
ended without the final flush, e.g. a power cut of every node), copies may
differ in the writes that were never flushed: each node kept another
subset. The run that resumes the cluster then also compares each object a
node holds, but not as its first owner, with the first owner's copy
(GET_HASH) and takes that copy when they differ, so every gateway reads
the same bytes; a request for such an object waits for it, as for any
object still to recover.

Throttling, as Sheepdog's `dog node recovery set-throttle MAX INTERVAL`
(SD_OP_SET_RECOVERY, per node): at most MAX objects are started every
INTERVAL milliseconds, and no more than MAX are in flight. Without a
throttle (the default, MAX = INTERVAL = 0) RECOVERY_PARALLEL objects are
in flight with no pause, so client I/O keeps most of the disk and network;
a client request for an object not yet recovered is never throttled. A
throttle set during a recovery applies from its next object. A newer epoch cancels the running recovery and
starts over from the new ring; objects already pulled are then kept.

`dog cluster recover disable` (the config's disable_recovery) suspends
that feed: a run still builds its object list and still recovers each
object a client asks for, but starts no other object until `dog cluster
recover enable` (`resume`), as Sheepdog's suspended recovery does.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ..placement import PlacementRing
from ..proto import (
    SD_SHEEP_PROTO_VER,
    Flag,
    HashResult,
    ObjArgs,
    Op,
    RecoveryState,
    RecoveryThrottle,
    Request,
    Res,
    SdNode,
    is_data_obj,
)
from ..store import NoObject, ObjectStore, StoreError
from . import ec_recovery
from .peer_client import PeerClient, PeerError
from .repair import sha1_of

if TYPE_CHECKING:
    from .peer import PeerOps
    from .vdi_ops import VdiOps
    from .view import ClusterView

log = logging.getLogger("sheep.recovery")

# enum rw_state in Sheepdog's recovery.c, as STAT_RECOVERY reports it.
RW_PREPARE_LIST, RW_RECOVER_OBJ, RW_NOTIFY_COMPLETION = 0, 1, 2
# Objects recovered at once: enough to overlap a read from a peer with a
# local write, few enough that client requests are not queued behind us.
RECOVERY_PARALLEL = 2
# How many older epochs are searched for an object's previous owners.
EPOCHS_BACK = 8
# Object-list answer buffer (8 bytes per object); grown on BUFFER_SMALL.
OBJ_LIST_BYTES = 1 << 20
# A peer at another epoch answers OLD/NEW_NODE_VER: wait and ask again.
EPOCH_RETRY_DELAY = 0.2
EPOCH_RETRIES = 50
LAGGING = frozenset({Res.OLD_NODE_VER, Res.NEW_NODE_VER, Res.WAIT_FOR_JOIN})


class _Run:
    """One epoch's recovery on this node."""

    def __init__(self, epoch: int, base: int) -> None:
        self.epoch = epoch
        self.base = base  # the last epoch whose objects we fully held
        self.completed = False  # ran to its end (not superseded)
        self.state = RW_PREPARE_LIST
        self.prepared = trio.Event()
        self.finished = False
        self.ended = trio.Event()  # nothing of it touches the store any more
        self.pending: dict[int, trio.Event] = {}  # oid -> set when settled
        self.inflight: set[int] = set()
        self.running = 0  # objects the run loop started, not finished yet
        self.slot_freed = trio.Event()
        # Objects recovered out of turn (a request asked for them), still
        # running: the run may not end (and release every waiter) before.
        self.urgent = 0
        self.urgent_done = trio.Event()
        self.total = 0
        self.done = 0
        self.lists: dict[int, list[SdNode]] = {}  # oid -> nodes that listed it
        self.stale: dict[int, list[tuple[SdNode, int]]] = {}  # oid -> (node, epoch)
        self.verify: set[int] = set()  # suspects: still referenced by an inode?
        self.keep: set[int] = set()  # local copies nobody else has: kept as they are
        self.failed = 0  # objects no node could give
        # After an unclean restart of the cluster: objects held here, not
        # as the first owner, to compare with the first owner's copy.
        self.reconcile = False
        self.compare: set[int] = set()
        self.cancel = trio.CancelScope()
        self.scopes: list[trio.CancelScope] = []  # urgent recoveries

    def stop(self) -> None:
        self.cancel.cancel()
        for scope in self.scopes:
            scope.cancel()
        self.finished = True
        self.release_all()

    def release_all(self) -> None:
        """Wake every waiter (the run was superseded or finished)."""
        self.prepared.set()
        for ev in self.pending.values():
            ev.set()


class Recovery:
    """Resource handling: runs its work in the node's nursery; `start`
    cancels a previous run. Error handling: an object no node can give is
    logged and counted as done; recovery never raises into the node."""

    def __init__(self, view: ClusterView, store: ObjectStore, peer: PeerOps, peers: PeerClient,
                 vdi: VdiOps, done: Callable[[int, bool], Awaitable[None]]) -> None:
        self.view = view
        self.store = store
        self.peer = peer
        self.peers = peers
        self.vdi = vdi
        self._done = done  # a run ended: (its epoch, whether every object came)
        self._nursery: trio.Nursery | None = None  # the last run's, for urgent objects
        self.current: _Run | None = None
        self._missing: dict[int, trio.Event] = {}
        self.throttle = RecoveryThrottle()
        self._throttle_set = trio.Event()
        self._resumed = trio.Event()
        # Since the node started (its metrics): objects stored by recovery
        # and their bytes.
        self.objects_moved = 0
        self.bytes_moved = 0

    def _moved(self, size: int) -> None:
        self.objects_moved += 1
        self.bytes_moved += size

    def set_throttle(self, max_exec_count: int, interval_ms: int) -> None:
        """Sheepdog's set_recovery: both nonzero throttles, both 0 stops
        throttling (the caller refuses one without the other)."""
        on = max_exec_count > 0 and interval_ms > 0
        self.throttle = RecoveryThrottle(max_exec_count, interval_ms, on)
        ev, self._throttle_set = self._throttle_set, trio.Event()
        ev.set()

    def resume(self) -> None:
        """Automatic recovery was enabled again: a suspended feed goes on."""
        ev, self._resumed = self._resumed, trio.Event()
        ev.set()

    def state(self) -> RecoveryState:
        r = self.current
        if r is None or r.finished:
            return RecoveryState()
        return RecoveryState(1, r.state, r.done, r.total)

    @property
    def active(self) -> bool:
        return self.current is not None and not self.current.finished

    def start(self, nursery: trio.Nursery, epoch: int, *, reconcile: bool = False,
              same_ring: bool = False) -> None:
        """Recover for `epoch`. Its base, the epoch whose ring says which of
        our copies are up to date, is the one before, unless the previous
        run was cut short by this very change: then its objects not yet
        pulled are still old here, and its base carries over (as Sheepdog
        hands an unfinished recovery's old vnode info to the next)."""
        prev = self.current
        # `same_ring`: a waiting cluster resumed at the epoch it stopped at,
        # so the ring that says which copies are ours is this epoch's.
        base = epoch if same_ring else epoch - 1
        if prev is not None:
            prev.stop()
            if not prev.completed and prev.epoch == epoch - 1:
                base = prev.base
        run = self.current = _Run(epoch, base)
        self._nursery = nursery
        run.reconcile = reconcile or (prev is not None and prev.reconcile and not prev.completed)
        nursery.start_soon(self._main, run, prev)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    async def stop_and_wait(self) -> None:
        """Stop the run and return once it has ended. Why wait: a cancelled
        run may still be storing an object in a worker thread; the store
        being formatted under it would fail that write, or take it into
        the new cluster's store."""
        run = self.current
        self.stop()
        if run is not None:
            await run.ended.wait()

    async def ready(self, oid: int) -> None:
        """Return once `oid` may be served from this node's store."""
        while True:
            r = self.current
            if r is None or r.finished:
                return
            if not r.prepared.is_set():
                await r.prepared.wait()
                continue
            ev = r.pending.get(oid)
            if ev is None or ev.is_set():
                return
            if oid not in r.inflight and self._nursery is not None:
                self._nursery.start_soon(self._recover_one, r, oid, True)
            await ev.wait()
            if self.current is r:
                return

    async def fetch_missing(self, oid: int) -> bool:
        """A write found no copy of `oid` here although we own it (our
        recovery never saw it in any list, e.g. a list taken before it was
        created): pull it from a member that has it, current owners first,
        then previous owners, then stale copies. True when it is here now.
        One pull per object at a time; later callers wait for it."""
        ev = self._missing.get(oid)
        if ev is not None:
            await ev.wait()
            return await self.peer.exists(oid)
        ev = self._missing[oid] = trio.Event()
        try:
            return await self._pull_missing(oid)
        finally:
            del self._missing[oid]
            ev.set()

    async def _pull_missing(self, oid: int) -> bool:
        epoch = self.view.epoch
        run = _Run(epoch + 1, epoch)  # sources as seen from a run after this epoch
        sources = self._sources(run, oid)
        if not sources:
            return False
        if self.view.ec_of(oid) is not None:
            return await ec_recovery.rebuild(self, epoch, sources, oid)
        size = self.view.object_size(oid)
        for src, tgt in sources:
            buf = await self._whole_copy(src, oid, size, epoch, tgt)
            if buf is None:
                continue
            if await self.peer.exists(oid):
                return True  # created meanwhile (recovery or a client)
            await self.peer.create_and_write(oid, 0, memoryview(buf), size, sync=True)
            self._moved(size)
            log.info("pulled %016x from %s: a write found no copy here", oid, src.nid)
            return True
        return False

    async def _whole_copy(self, src: SdNode, oid: int, size: int, epoch: int,
                          tgt_epoch: int) -> bytearray | None:
        """`src`'s copy of `oid` as of `tgt_epoch` (zeros past what it
        sent), or None when it could not give one."""
        buf = bytearray(size)
        req = Request(Op.READ_PEER, 0, epoch, 0, size,
                      ObjArgs(oid=oid, tgt_epoch=tgt_epoch).pack(), SD_SHEEP_PROTO_VER)
        try:
            rsp, n = await self.peers.request(src.nid, req, None, memoryview(buf))
        except PeerError:
            return None
        if rsp.result != Res.SUCCESS:
            return None
        buf[n:] = bytes(size - n)
        return buf

    # ---- the run ----

    async def _main(self, run: _Run, prev: _Run | None = None) -> None:
        with run.cancel:
            try:
                if prev is not None:
                    # A cancelled run may still be storing an object in a
                    # worker thread: an erasure-coded strip of its epoch's
                    # index must not land after we read which strip we hold.
                    await prev.ended.wait()
                await self._prepare(run)
                run.state = RW_RECOVER_OBJ
                run.prepared.set()
                log.info("epoch %d: recovering %d objects", run.epoch, run.total)
                async with trio.open_nursery() as nursery:
                    await self._feed(run, nursery)
                # The feed skips objects recovered out of turn: had the run
                # ended before them, the requests waiting for them would
                # write, and the copy they then store would undo it.
                while run.urgent:
                    await run.urgent_done.wait()
                run.state = RW_NOTIFY_COMPLETION
                await trio.to_thread.run_sync(self.store.flush)
                run.completed = True
                log.info("epoch %d: recovery done, %d objects", run.epoch, run.done)
            except Exception:
                log.exception("epoch %d: recovery failed", run.epoch)
            finally:
                run.release_all()
                run.ended.set()
        if self.current is run and not run.finished:
            run.finished = True
            ok = run.failed == 0 and run.state == RW_NOTIFY_COMPLETION
            await self._done(run.epoch, ok)

    def _ring(self, epoch: int) -> PlacementRing | None:
        return self.view.ring_at(epoch)

    async def _prepare(self, run: _Run) -> None:
        new = self._ring(run.epoch)
        if new is None or self.view.me.nr_vnodes == 0:
            return
        prev = self._ring(run.base) if run.base >= 1 else None
        me = self.view.me.nid

        def scan() -> tuple[set[int], list[tuple[int, int]]]:
            return set(self.store.oids()), list(self.store.stale_copies())

        local, stale = await trio.to_thread.run_sync(scan)
        seen: dict[int, list[SdNode]] = {}
        for peer in self.view.members:
            if peer.nid == me or peer.nr_vnodes == 0:
                continue
            for oid in await self._obj_list(peer, run.epoch):
                seen.setdefault(oid, []).append(peer)
            for oid, ep in await self._stale_list(peer, run.epoch):
                run.stale.setdefault(oid, []).append((peer, ep))
        for oid, ep in stale:
            run.stale.setdefault(oid, []).append((self.view.me, ep))
        for oid in itertools.chain(local, run.stale):
            seen.setdefault(oid, [])
        for oid, holders in seen.items():
            owners = self.view.owners_in(new, oid)
            if not any(n.nid == me for n in owners):
                continue
            before = self.view.owners_in(prev, oid) if prev is not None else ()
            was = {n.nid for n in before}
            if oid in local and me in was and ec_recovery.holds_wanted_strip(
                    self.view, self.store, oid, me, owners):
                if not run.reconcile or owners[0].nid == me:
                    continue  # ours through the last epoch: up to date
                # A power cut may have kept another subset of the unflushed
                # writes here than on the first owner: its copy decides.
                run.compare.add(oid)
                run.pending[oid] = trio.Event()
                run.lists[oid] = []
                continue
            if is_data_obj(oid) and not any(h.nid in was for h in holders):
                # Nobody who owned it last epoch has it: deleted while its
                # holders were away, or a double failure. Ask the inodes.
                run.verify.add(oid)
            if oid in local and not holders and self.view.ec_of(oid) is None:
                # (A strip is never the best there is: it may be another
                # index's. The rebuild finds the strips wherever they are.)
                if oid not in run.verify:
                    continue  # nobody else has it: our copy is the best there is
                run.keep.add(oid)
            run.pending[oid] = trio.Event()
            run.lists[oid] = holders
        run.total = len(run.pending)

    async def _obj_list(self, peer: SdNode, epoch: int) -> list[int]:
        size = OBJ_LIST_BYTES
        tries = 0
        while True:
            buf = bytearray(size)
            req = Request(Op.GET_OBJ_LIST, 0, epoch, 0, size,
                          ObjArgs(tgt_epoch=epoch).pack(), SD_SHEEP_PROTO_VER)
            try:
                rsp, n = await self.peers.request(peer.nid, req, None, memoryview(buf))
            except PeerError as e:
                # A node just (re)started may drop us while it syncs; one
                # that died leaves the membership, which restarts us.
                if tries < EPOCH_RETRIES and self.view.epoch == epoch and any(
                        n.nid == peer.nid for n in self.view.members):
                    tries += 1
                    await trio.sleep(EPOCH_RETRY_DELAY)
                    continue
                log.warning("no object list from %s: %s", peer.nid, e)
                return []
            if rsp.result == Res.BUFFER_SMALL:
                size *= 4
                continue
            if rsp.result in LAGGING and tries < EPOCH_RETRIES and self.view.epoch == epoch:
                tries += 1  # the peer has not applied this epoch yet
                await trio.sleep(EPOCH_RETRY_DELAY)
                continue
            if rsp.result != Res.SUCCESS:
                log.warning("object list from %s: result %#x", peer.nid, rsp.result)
                return []
            return [v for (v,) in struct.iter_unpack("<Q", bytes(buf[:n - n % 8]))]

    async def _stale_list(self, peer: SdNode, epoch: int) -> list[tuple[int, int]]:
        """The (oid, epoch) stale copies `peer` keeps ([] when it cannot say)."""
        size = OBJ_LIST_BYTES
        while True:
            buf = bytearray(size)
            req = Request(Op.GET_OBJ_LIST, Flag.CMD_WILDCARD, epoch, 0, size,
                          ObjArgs(tgt_epoch=epoch).pack(), SD_SHEEP_PROTO_VER)
            try:
                rsp, n = await self.peers.request(peer.nid, req, None, memoryview(buf))
            except PeerError:
                return []
            if rsp.result == Res.BUFFER_SMALL:
                size *= 4
                continue
            if rsp.result != Res.SUCCESS:
                return []
            return list(struct.iter_unpack("<QQ", bytes(buf[:n - n % 16])))

    def _sources(self, run: _Run, oid: int) -> list[tuple[SdNode, int]]:
        """(node, tgt_epoch) to try: previous owners of the newest epoch
        first, then the nodes that listed it, then stale copies, newest
        first (this node's own among them: read locally)."""
        alive = {n.nid: n for n in self.view.members}
        out: list[tuple[SdNode, int]] = []
        tried: set[object] = {self.view.me.nid}
        for ep in range(run.epoch - 1, max(0, run.epoch - 1 - EPOCHS_BACK), -1):
            ring = self._ring(ep)
            if ring is None:
                continue
            for n in self.view.owners_in(ring, oid):
                if n.nid in alive and n.nid not in tried:
                    tried.add(n.nid)
                    out.append((alive[n.nid], ep))
        for n in run.lists.get(oid, []):
            if n.nid not in tried:
                tried.add(n.nid)
                out.append((n, run.epoch - 1))
        for n, ep in sorted(run.stale.get(oid, []), key=lambda s: -s[1]):
            if n.nid == self.view.me.nid or n.nid in alive:
                out.append((n, max(ep, 1)))
        return out

    def _limit(self) -> int:
        t = self.throttle
        return t.max_exec_count if t.throttling else RECOVERY_PARALLEL

    async def _feed(self, run: _Run, nursery: trio.Nursery) -> None:
        """Start the run's objects, as many in flight as the throttle allows,
        and with a throttle at most its max per interval."""
        todo = list(run.pending)
        started = 0  # in this interval
        i = 0
        while i < len(todo):
            if self.view.config.disable_recovery:
                await self._resumed.wait()
                continue
            t = self.throttle
            if t.throttling and started >= t.max_exec_count:
                with trio.move_on_after(t.queue_work_interval / 1000):
                    await self._throttle_set.wait()  # a new throttle: go on at once
                started = 0
                continue
            if run.running >= self._limit():
                ev = run.slot_freed = trio.Event()
                await ev.wait()
                continue
            oid = todo[i]
            i += 1
            if run.pending[oid].is_set() or oid in run.inflight:
                continue
            run.inflight.add(oid)
            run.running += 1
            started += 1
            nursery.start_soon(self._one_slot, run, oid)

    async def _one_slot(self, run: _Run, oid: int) -> None:
        try:
            await self._recover_one(run, oid, False)
        finally:
            run.running -= 1
            run.slot_freed.set()

    async def _recover_one(self, run: _Run, oid: int, urgent: bool) -> None:
        if urgent:
            if oid in run.inflight or run.finished:
                return
            run.inflight.add(oid)
            run.urgent += 1
        ev = run.pending.get(oid)
        scope = trio.CancelScope()
        run.scopes.append(scope)
        try:
            with scope:
                if oid in run.compare:
                    if not await self._reconcile(run, oid):
                        run.failed += 1
                    return
                if oid in run.verify and await self._unreferenced(oid):
                    return
                if oid not in run.keep and not await self._fetch(run, oid):
                    run.failed += 1
        finally:
            if ev is not None and not ev.is_set():
                run.done += 1
                ev.set()
            if not urgent:
                run.inflight.discard(oid)
            else:
                run.urgent -= 1
                if not run.urgent:
                    run.urgent_done.set()
                    run.urgent_done = trio.Event()

    async def _reconcile(self, run: _Run, oid: int) -> bool:
        """Make our copy the first owner's when they differ (compared by
        SHA-1, so only differing objects move). False when it could not
        be compared; our copy then stays as it is."""
        ring = self._ring(run.epoch)
        if ring is None:
            return False
        if self.view.ec_of(oid) is not None:
            return True  # strips differ by design: `dog vdi check` checks parity
        first = self.view.owners_in(ring, oid)[0]
        size = self.view.object_size(oid)
        req = Request(Op.GET_HASH, 0, run.epoch, 0, 0, ObjArgs(oid=oid).pack(),
                      SD_SHEEP_PROTO_VER)
        try:
            rsp, _ = await self.peers.request(first.nid, req)
        except PeerError as e:
            log.warning("cannot compare %016x with %s: %s", oid, first.nid, e)
            return False
        if rsp.result == Res.NO_OBJ:
            return True  # the first owner has none: ours is all there is
        if rsp.result != Res.SUCCESS:
            return False
        try:
            ours = await trio.to_thread.run_sync(sha1_of, self.store, oid, size)
        except StoreError:
            ours = b""
        if HashResult.unpack(rsp.args).digest == ours:
            return True
        buf = await self._whole_copy(first, oid, size, run.epoch, run.epoch)
        if buf is None:
            return False
        # Synced: it replaces a copy that was durable, and if a cut came
        # before the run's closing flush, the name could outlive the bytes
        # and a garbage copy would be compared as ours next time.
        await self.peer.create_and_write(oid, 0, memoryview(buf), size, sync=True)
        self._moved(size)
        log.info("%016x differed from %s's copy after an unclean stop: replaced", oid,
                 first.nid)
        return True

    async def _unreferenced(self, oid: int) -> bool:
        """True when no live inode names this data object: then our copy,
        if any, is removed and nothing is pulled."""
        if await self.vdi.is_mapped(oid) is not False:
            return False
        try:
            await trio.to_thread.run_sync(self.store.remove, oid)
            log.info("dropped %016x: no inode refers to it (removed while away)", oid)
        except NoObject:
            log.info("not recovering %016x: no inode refers to it", oid)
        except StoreError as e:
            log.warning("cannot drop unreferenced %016x: %s", oid, e)
        return True

    async def _fetch(self, run: _Run, oid: int) -> bool:
        """Pull `oid` from the first source that has it; False when none did."""
        if self.view.ec_of(oid) is not None:
            return await ec_recovery.rebuild(self, run.epoch, self._sources(run, oid), oid)
        size = self.view.object_size(oid)
        buf = bytearray(size)
        for src, tgt in self._sources(run, oid):
            if src.nid == self.view.me.nid:
                try:
                    await trio.to_thread.run_sync(self.store.read_stale, oid, tgt,
                                                  memoryview(buf))
                    await self.peer.create_and_write(oid, 0, memoryview(buf), size,
                                                     sync=False)
                except StoreError as e:
                    log.debug("recover %016x from our stale copy: %s", oid, e)
                    continue
                self._moved(size)
                log.info("recovered %016x from our stale copy of epoch %d", oid, tgt)
                return True
            req = Request(Op.READ_PEER, 0, run.epoch, 0, size,
                          ObjArgs(oid=oid, tgt_epoch=tgt).pack(), SD_SHEEP_PROTO_VER)
            for _ in range(EPOCH_RETRIES):
                try:
                    rsp, n = await self.peers.request(src.nid, req, None, memoryview(buf))
                except PeerError as e:
                    log.debug("recover %016x from %s: %s", oid, src.nid, e)
                    break
                if rsp.result in LAGGING:
                    if self.view.epoch != run.epoch:
                        return True  # superseded; the next run takes over
                    await trio.sleep(EPOCH_RETRY_DELAY)
                    continue
                if rsp.result != Res.SUCCESS:
                    break
                if n < size:
                    buf[n:] = bytes(size - n)
                try:
                    await self.peer.create_and_write(oid, 0, memoryview(buf), size, sync=False)
                except StoreError as e:
                    log.error("cannot store recovered %016x: %s", oid, e)
                    return False
                self._moved(size)
                log.debug("recovered %016x from %s (epoch %d)", oid, src.nid, tgt)
                return True
        log.warning("epoch %d: no node could give object %016x", run.epoch, oid)
        return False
