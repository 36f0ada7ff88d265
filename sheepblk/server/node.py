"""One sheep: its state, the request dispatcher and the ordered cluster stream.

Request flow: the connection layer hands every decoded request to
`Sheep.handle`, which checks its fields (wire_checks) and the cluster
status, then calls the handler the op table (optable.py) names for the
opcode: gateway_ops, peer_ops, local_ops, md_ops, or cluster_ops, whose
ops go through the driver's ordered stream (see messages.py). A cluster
op's main half runs in `_apply_main`, on every node for every operation
in the same order.

Membership (see membership.py): a joiner parks its events until the
`sync` message of a member brings it the cluster's state; every
membership change of a running cluster makes a new epoch and starts
recovery (recovery.py); a restarted cluster waits for the nodes of its
last epoch, learnt from the `claim` messages of the nodes that come back.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import trio

from ..cluster.driver import ClusterDriver, Event, Joined, Left, Message
from ..cluster.ring import Ring
from ..loglevels import python_level
from ..proto import (
    SD_DEFAULT_VNODES,
    ClusterStatus,
    Flag,
    InodeHeader,
    NodeId,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
    VdiArgs,
    get_objsize,
    is_data_obj,
    is_vdi_obj,
    oid_to_vid,
)
from ..proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT, SD_DEFAULT_COPIES, ClusterFlag
from ..proto.inode import SD_INODE_HEADER_SIZE
from ..store import BACKENDS, EpochStore, NodeConfig, NoObject, ObjectStore, StoreError
from . import gateway_ops, wire_checks
from . import membership as mship
from .buffers import BufferPool
from .gateway import RETRY_PAUSE, RETRY_TIMEOUT, Gateway, GatewayError
from .lock_lease import LockLeases, Release
from .messages import BadMessage, ClusterMsg
from .optable import OPS, Kind
from .peer import PeerOps, result_of
from .peer_client import PeerClient, PeerError
from .recovery import EPOCHS_BACK, Recovery
from .reply import Caller, Reply
from .vdi_ops import VdiError, VdiOps, inode_names
from .vdi_table import VdiEntry, VdiTable
from .wire_text import shown

log = logging.getLogger("sheep")

# SHUTDOWN and KILL_NODE answer before the node stops; this is how long the
# answer gets to leave (it is a courtesy to the client, not a correctness
# requirement).
STOP_DELAY = 0.2
# A peer request from a node already at a newer epoch waits this long for
# ours to catch up before it is answered NEW_NODE_VER (and retried).
NEW_EPOCH_WAIT = 5.0
# What a block's work half may answer after meeting a node that is gone:
# the op goes through the stream again at the next epoch (cluster_op).
STREAM_RETRYABLE = frozenset({Res.NETWORK_ERROR, Res.OLD_NODE_VER, Res.NEW_NODE_VER})
# True in the task running a block's work half (the epoch is frozen there).
_IN_WORK: ContextVar[bool] = ContextVar("sheep_in_work", default=False)


@dataclass
class Options:
    store_dir: Path
    port: int = 7000
    bindaddr: str = "127.0.0.1"
    myaddr: str | None = None
    zone: int | None = None
    vnodes: int | None = None
    gateway: bool = False
    nosync: bool = False
    cluster: str = "local"


def default_zone(addr: str) -> int:
    """As Sheepdog: the last four bytes of the address, when none is given."""
    from ..proto.node import addr_to_bytes

    return int.from_bytes(addr_to_bytes(addr)[12:16], "little")


class _Waiter:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply = Reply(Res.SYSTEM_ERROR)


class Sheep:
    """Resource handling: owns the store, the peer connections and (through
    `run_cluster`) the driver's tasks. Error handling: `handle` never raises
    for a request's own failure; it answers with the result code."""

    def __init__(self, opts: Options, store: ObjectStore, driver: ClusterDriver) -> None:
        self.opts = opts
        self.root = opts.store_dir
        self.store = store
        self.driver = driver
        self.config = NodeConfig.load(self.root)
        self.epochs = EpochStore(self.root)
        self.epoch = self.epochs.latest() if self.config.ctime else 0
        addr = opts.myaddr or opts.bindaddr
        if addr in ("0.0.0.0", "::", ""):
            addr = "127.0.0.1"
        zone = opts.zone if opts.zone is not None else default_zone(addr)
        vnodes = 0 if opts.gateway else (opts.vnodes or SD_DEFAULT_VNODES)
        size, used = store.space()
        self.me = SdNode(NodeId(addr, opts.port), vnodes, zone, size - used)
        self.key = str(self.me.nid)
        self.auto_vnodes = opts.vnodes is None
        self.status = ClusterStatus.WAIT
        self.members: list[SdNode] = []
        self.table = VdiTable()
        self.peer = PeerOps(store, lambda: self.epoch)
        self.peers = PeerClient()
        self.recovery = Recovery(self)
        self.gateway = Gateway(self.me, self.peer, self.peers, self.placement,
                               self.object_size, lambda: self.epoch,
                               wait_epoch=self.wait_epoch, ready=self.recovery.ready,
                               halted=self.halted, fetch_missing=self.recovery.fetch_missing,
                               strict_short=self.strict_short,
                               member=lambda n: any(m.nid == n.nid for m in self.members),
                               frozen=_IN_WORK.get)
        self.vdi = VdiOps(self.gateway, self.table,
                          recycle=lambda: bool(self.config.flags & ClusterFlag.RECYCLE_VID))
        self.leases = LockLeases()  # lock sessions of this node's clients
        self.loglevel = 6
        self.buffers = BufferPool()
        self.stopped = trio.Event()
        self.failed = ""  # why this node left the cluster (fail-stop)
        # Whether the last run of this node ended without its final flush
        # (set by the daemon from its marker file), and which claimers of
        # a waiting cluster said so of themselves.
        self.unclean = False
        self._unclean_claims: set[str] = set()
        self._queue: deque[ClusterMsg | Event] = deque()
        self._running_block = False
        self._waiters: dict[int, _Waiter] = {}
        self._op_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._joined = False
        self._ring: Ring | None = None
        self._ring_members: list[SdNode] = []
        self._rings: dict[int, Ring | None] = {}
        self._max_zones_seen, self._zones_at = 1, -1
        self._epoch_moved = trio.Event()
        # Join protocol state (see membership.py).
        self._sync_wait: int | None = None  # seq of our Joined, until synced
        self._parked: list[Event] = []
        self._sync_from: set[str] = set()  # members when we joined, still here
        self._pending_sync: dict[str, int] = {}  # joiner key -> its Joined seq
        self._claimed: set[str] = set()
        self._recovered: dict[int, set[str]] = {}
        self._recovered_ok: dict[int, set[str]] = {}

    # ---- placement and sizes ----

    def current_ring(self) -> Ring:
        if self._ring is None or self._ring_members != self.members:
            self._ring = Ring(self.members or [self.me])
            self._ring_members = list(self.members)
        return self._ring

    def copies_of(self, oid: int) -> int:
        e = self.table.get(oid_to_vid(oid))
        return (e.copies if e else 0) or self.config.copies or SD_DEFAULT_COPIES

    def placement(self, oid: int, copies: int) -> Sequence[SdNode]:
        """The owners of an object: this node alone while it is the only
        member, else the ring of the current members."""
        if len(self.members) <= 1:
            return [self.me]
        return self.current_ring().oid_to_nodes(oid, copies or self.copies_of(oid)) or [self.me]

    def halted(self, oid: int, copies: int) -> bool:
        """Too few zones alive for a majority of the object's copies (as
        many as the cluster ever had zones for: a one-node cluster with
        copies=3 runs, a three-node one down to one zone does not)."""
        copies = min(copies or self.copies_of(oid), self._max_zones())
        return self.current_ring().nr_zones < copies // 2 + 1

    def strict_short(self, oid: int, copies: int) -> bool:
        """In strict mode, fewer live zones than the object's copies (data
        and parity strips for erasure coding): writes halt."""
        return (bool(self.config.flags & ClusterFlag.STRICT)
                and self.current_ring().nr_zones < (copies or self.copies_of(oid)))

    def _max_zones(self) -> int:
        """The most zones any epoch of this cluster had."""
        if self._zones_at != self.epoch:
            best = 1
            for ep in range(1, self.epoch + 1):
                ring = self.ring_at(ep)
                if ring is not None:
                    best = max(best, ring.nr_zones)
            self._max_zones_seen, self._zones_at = best, self.epoch
        return self._max_zones_seen

    def ring_at(self, epoch: int) -> Ring | None:
        """The ring of a past (or the current) epoch, from epoch/."""
        if epoch not in self._rings:
            got = self.epochs.read(epoch) if epoch > 0 else None
            self._rings[epoch] = Ring(got[0]) if got and got[0] else None
        return self._rings[epoch]

    async def wait_epoch(self, epoch: int, delay: float) -> None:
        """Return when the epoch is no longer `epoch`, or after `delay`."""
        with trio.move_on_after(delay):
            while self.epoch == epoch:
                await self._epoch_moved.wait()

    def _set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        ev, self._epoch_moved = self._epoch_moved, trio.Event()
        ev.set()

    def stop_soon(self) -> None:
        """Stop after the answer that asked for it has gone out."""

        async def later() -> None:
            await trio.sleep(STOP_DELAY)
            self.stopped.set()

        if self._nursery is not None:
            self._nursery.start_soon(later)
        else:
            self.stopped.set()

    def fail_stop(self, why: str) -> None:
        """Leave the cluster for good: this node can no longer hold what
        the cluster gives it. Requests are answered KILLED from now on, a
        code gateways retry, so the write that found the fault goes on at
        the next epoch, without us (Sheepdog answers an EIO the same way
        and leaves the cluster). The process then stops, which leaves the
        cluster, and exits non-zero."""
        if self.failed:
            return
        self.failed = why
        log.error("leaving the cluster: %s", why)
        self.status = ClusterStatus.KILLED
        self.stop_soon()

    def set_loglevel(self, level: int) -> None:
        """Sheepdog's 0 (emerg) .. 7 (debug) onto Python logging levels."""
        self.loglevel = level
        logging.getLogger().setLevel(python_level(level))

    def object_size(self, oid: int) -> int:
        if is_data_obj(oid):
            e = self.table.get(oid_to_vid(oid))
            shift = e.block_size_shift if e else self.config.block_size_shift
            return get_objsize(oid, 1 << (shift or SD_DEFAULT_BLOCK_SIZE_SHIFT))
        return get_objsize(oid)

    @property
    def formatted(self) -> bool:
        return self.config.ctime != 0

    def new_caller(self, peer: str) -> Caller:
        caller = Caller(f"{self.key}/{next(self._conn_ids)}", peer)
        self.leases.opened(caller.key, peer)
        return caller

    # ---- start-up ----

    async def load_vdis(self) -> None:
        """Rebuild the VDI table from the inode objects stored here."""
        self.table.reset()
        if not self.formatted:
            return

        def scan() -> list[bytes]:
            out = []
            for oid in self.store.oids():
                if is_vdi_obj(oid):
                    buf = memoryview(bytearray(SD_INODE_HEADER_SIZE))
                    try:
                        self.store.read_into(oid, 0, buf)
                    except StoreError:
                        continue
                    out.append(bytes(buf))
            return out

        for raw in await trio.to_thread.run_sync(scan):
            h = InodeHeader.unpack(raw)
            if not h.vdi_id:
                continue
            name, tag = inode_names(raw)
            self.table.add(VdiEntry(h.vdi_id, h.nr_copies, h.copy_policy,
                                    h.block_size_shift, h.is_snapshot, deleted=not name,
                                    parent=h.parent_vdi_id, name=name, tag=tag,
                                    snap_id=h.snap_id, create_time=h.create_time,
                                    named=True))
        log.info("loaded %d VDIs", len(self.table.entries))

    async def run_cluster(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Join through the driver and apply its events until cancelled."""
        send, recv = trio.open_memory_channel[Event](1024)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.driver.run, self.me, send)
            nursery.start_soon(self._consume, recv)
            task_status.started()

    async def _consume(self, recv: trio.MemoryReceiveChannel[Event]) -> None:
        async for ev in recv:
            try:
                await self._on_event(ev)
            except Exception as e:
                # Every node applies the same stream; one that could not
                # apply an event may now differ from the others, and must
                # not serve from that state (C Sheepdog aborts).
                log.exception("failed to apply cluster event %r", ev)
                self.fail_stop(f"cannot apply cluster event {type(ev).__name__}: {e!r}")

    # ---- the ordered stream ----

    async def _on_event(self, ev: Event) -> None:
        if self._sync_wait is not None:
            await self._parked_event(ev)
            return
        if isinstance(ev, Joined) and ev.node.nid == self.me.nid:
            await self._own_join(ev)
            return
        if isinstance(ev, Message):
            try:
                msg = ClusterMsg.decode(ev.payload)
            except (BadMessage, KeyError, ValueError) as e:
                log.warning("dropping undecodable cluster message from %s: %s", ev.sender, e)
                return
            if msg.kind == "notify" and msg.blocked:
                head = self._queue[0] if self._queue else None
                if (isinstance(head, ClusterMsg) and head.kind == "block"
                        and head.origin == msg.origin and head.op_id == msg.op_id):
                    self._queue.popleft()
                    self._running_block = False
                    await self._apply_main(msg)
                elif not any(isinstance(q, ClusterMsg) and q.kind == "block"
                             and q.origin == msg.origin and q.op_id == msg.op_id
                             for q in self._queue):
                    # Its block came before we joined: the sync's state may
                    # or may not hold it; main halves are idempotent.
                    await self._apply_main(msg)
                else:
                    log.warning("notify %s/%d matches no block", msg.origin, msg.op_id)
            else:
                self._queue.append(msg)
        else:
            if isinstance(ev, Left):
                head = self._queue[0] if self._queue else None
                if (isinstance(head, ClusterMsg) and head.kind == "block"
                        and head.origin == str(ev.node.nid)):
                    self._queue.popleft()
                    self._running_block = False
            self._queue.append(ev)
        await self._drain()

    async def _drain(self) -> None:
        while self._queue and not self._running_block:
            head = self._queue[0]
            if isinstance(head, ClusterMsg) and head.kind == "block":
                alive = {str(n.nid) for n in self.members}
                if head.origin not in alive and head.origin != self.key:
                    self._queue.popleft()
                    continue
                self._running_block = True
                if head.origin == self.key:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._do_work, head)
                return
            self._queue.popleft()
            if isinstance(head, ClusterMsg):
                if head.kind in mship.KINDS:
                    await self._apply_member_msg(head)
                else:
                    await self._apply_main(head)
            elif isinstance(head, Joined | Left):
                await self._membership(head)

    async def cluster_op(self, req: Request, data: memoryview | None, caller: Caller,
                         extra: dict | None = None) -> Reply:
        """Through the ordered stream. A work half that met a node that is
        gone answers at once (see gateway.FROZEN_ATTEMPTS); the op then
        goes through the stream again, after the membership change that
        was waiting behind it has moved the epoch."""
        info = OPS[req.opcode]
        payload = bytes(data) if data is not None else b""
        deadline = trio.current_time() + RETRY_TIMEOUT
        while True:
            epoch = self.epoch
            reply = await self._through_stream("block" if info.work else "notify", req.pack(),
                                               payload, caller.key, extra or {})
            if (not info.work or reply.result not in STREAM_RETRYABLE
                    or trio.current_time() > deadline):
                return reply
            await self.wait_epoch(epoch, RETRY_PAUSE)
            log.info("%s again at epoch %d (%s)", Op(req.opcode).name, self.epoch,
                     Res(reply.result).name)

    async def barrier(self) -> None:
        """Return once every cluster event ordered before this call has
        been applied here. Why: each node applies the stream at its own
        pace, and a client told "deleted" (or "created") by one node may
        ask another at once; a local answer given after this is never
        older than that. An empty notify (opcode 0, no main half) is one
        broadcast, and it blocks no one."""
        await self._through_stream("notify", bytes(48), b"", "", {})

    async def caught_up(self) -> None:
        """The barrier, where it can matter: on a joined node of a cluster
        of several, not parked for its join sync (alone, a node applied
        everything before it answered; parked, it applies nothing yet)."""
        if (self._joined and self._sync_wait is None and len(self.members) > 1
                and self.status in (ClusterStatus.OK, ClusterStatus.WAIT)):
            await self.barrier()

    async def _through_stream(self, kind: str, req: bytes, data: bytes, owner: str,
                              extra: dict) -> Reply:
        op_id = next(self._op_ids)
        waiter = self._waiters[op_id] = _Waiter()
        msg = ClusterMsg(kind, op_id, self.key, req, data, owner, extra=extra)
        try:
            await self.driver.broadcast(msg.encode())
            await waiter.done.wait()
        finally:
            self._waiters.pop(op_id, None)
        return waiter.reply

    async def _do_work(self, msg: ClusterMsg) -> None:
        _IN_WORK.set(True)  # this task's own context (see gateway.FROZEN_ATTEMPTS)
        req = Request.unpack(msg.req)
        try:
            work = OPS[req.opcode].work
            assert work is not None  # only a block's op comes here
            reply, extra = await work(self, req, memoryview(msg.data), msg.owner)
        except (VdiError, GatewayError, StoreError, PeerError) as e:
            reply, extra = Reply(result_of(e)), {}
            log.debug("%s failed: %s", Op(req.opcode).name, e)
        except Exception:
            log.exception("cluster work for opcode %#x failed", req.opcode)
            reply, extra = Reply(Res.SYSTEM_ERROR), {}
        note = ClusterMsg("notify", msg.op_id, msg.origin, msg.req, msg.data, msg.owner,
                          reply.result, reply.args, blocked=True, extra={**msg.extra, **extra})
        try:
            await self.driver.broadcast(note.encode())
        except Exception:
            log.exception("cannot broadcast the result of opcode %#x", req.opcode)

    async def _apply_main(self, msg: ClusterMsg) -> None:
        req = Request.unpack(msg.req)
        result = msg.result
        info = OPS.get(req.opcode)
        if result == Res.SUCCESS and info is not None and info.main is not None:
            try:
                result = await info.main(self, req, msg)
            except Exception as e:
                # The others applied it (or will): this node's state is no
                # longer the cluster's. It leaves instead of drifting.
                log.exception("applying opcode %#x failed", req.opcode)
                self.fail_stop(f"cannot apply {Op(req.opcode).name} as the cluster did: {e!r}")
                result = Res.SYSTEM_ERROR
        if msg.origin == self.key:
            waiter = self._waiters.get(msg.op_id)
            if waiter is not None:
                waiter.reply = Reply(result, msg.rsp_args)
                waiter.done.set()

    # ---- membership ----

    async def _own_join(self, ev: Joined) -> None:
        """Our own Joined: alone, we are the cluster; else park events until
        a member's sync message brings us its state."""
        self._queue.clear()
        self._running_block = False
        self.members = list(ev.members)
        self._pending_sync.clear()
        self._claimed.clear()
        self._joined = True
        if len(ev.members) > 1:
            self._sync_wait = ev.seq
            self._parked = []
            self._sync_from = {str(n.nid) for n in ev.members} - {self.key}
            if self.status == ClusterStatus.OK:
                self.status = ClusterStatus.WAIT  # a re-join after a session loss
            log.info("joined as one of %d nodes; waiting for the cluster's state",
                     len(ev.members))
            return
        log.info("joined as the first node")
        self._claim_alone()
        self._maybe_resume()
        self._after_synced()

    def _claim_alone(self) -> None:
        """We are the cluster for now: our claim is the only one counted."""
        self._claimed = {self.key}
        self._unclean_claims = {self.key} if self.unclean else set()

    def _after_synced(self) -> None:
        if self.formatted and self.status == ClusterStatus.WAIT:
            self._send(mship.CLAIM, {
                "epoch": self.epoch,
                "nodes": [mship.node_to_json(n) for n in self._epoch_nodes(self.epoch)],
                "vdis": mship.entries_to_json(self.table, locks=False),
                "config": mship.config_to_json(self.config),
                "epochs": mship.epochs_to_json(self._epoch_history()),
                "unclean": self.unclean})

    def _epoch_history(self) -> list[tuple[int, list[SdNode], int]]:
        """The last SYNC_EPOCHS epochs, for a node that takes our state."""
        out = []
        for ep in range(max(1, self.epoch - mship.SYNC_EPOCHS + 1), self.epoch + 1):
            got = self.epochs.read(ep)
            if got is not None:
                out.append((ep, got[0], got[1]))
        return out

    async def _adopt_config(self, cfg: NodeConfig) -> None:
        """Become a member of the formatted cluster `cfg` describes: an
        empty store of its backend, no epochs of our own."""
        if cfg.store and cfg.store != self.store.name:
            if self.store.can_reopen and cfg.store in BACKENDS:
                await trio.to_thread.run_sync(self.store.reopen, cfg.store)
        await trio.to_thread.run_sync(self.store.format)
        self.epochs.clear()
        self._rings.clear()

    async def _adopt_claim(self, msg: ClusterMsg) -> None:
        """An unformatted node of a waiting cluster meets the claim of a
        formatted one (Sheepdog's test 070: the old nodes come back to
        new, unformatted ones): it takes that cluster's config and epochs,
        then claims like any member so the cluster can resume with it."""
        x = msg.extra
        cfg = mship.config_from_json(x["config"])
        await self._adopt_config(cfg)
        cfg.shutdown = False
        self.config = cfg
        self.config.save(self.root)
        for ep, nodes, stamp in mship.epochs_from_json(x.get("epochs", [])):
            self.epochs.write(ep, nodes, stamp)
        log.info("took the cluster of %s (created %#x) at epoch %d", msg.origin,
                 cfg.ctime, int(x["epoch"]))

    def _epoch_nodes(self, epoch: int) -> list[SdNode]:
        got = self.epochs.read(epoch) if epoch else None
        return got[0] if got else []

    async def _parked_event(self, ev: Event) -> None:
        if isinstance(ev, Message):
            try:
                msg = ClusterMsg.decode(ev.payload)
            except (BadMessage, KeyError, ValueError):
                msg = None
            if (msg is not None and msg.kind == mship.SYNC
                    and msg.extra.get("to") == self.key
                    and msg.extra.get("seq") == self._sync_wait):
                parked, self._parked = self._parked, []
                self._sync_wait = None
                await self._apply_sync(msg)
                for p in parked:
                    await self._on_event(p)
                return
        if isinstance(ev, Joined) and ev.node.nid == self.me.nid:
            await self._own_join(ev)  # joined again before the sync came
            return
        self._parked.append(ev)
        if isinstance(ev, Left):
            self._sync_from.discard(str(ev.node.nid))
            if not self._sync_from:
                await self._take_over()

    async def _take_over(self) -> None:
        """Every node that was a member when we joined has left before any
        could sync us: nobody left knows more than we do. Go on as the
        first node (what the remaining later joiners will sync from): a
        formatted node waits for its last epoch's nodes, as after a restart."""
        log.warning("every member left before syncing us; going on with our own state")
        parked, self._parked = self._parked, []
        self._sync_wait = None
        self._pending_sync.clear()
        self._claim_alone()
        self._maybe_resume()
        self._after_synced()
        for p in parked:
            await self._on_event(p)

    async def _apply_sync(self, msg: ClusterMsg) -> None:
        x = msg.extra
        cfg = mship.config_from_json(x["config"])
        status = ClusterStatus(int(x["status"]))
        self._pending_sync = {k: int(v) for k, v in x["pending"].items()}
        if cfg.ctime and self.formatted and cfg.ctime != self.config.ctime:
            self.fail_stop(f"refusing to join: this node's store belongs to another cluster "
                           f"(created {self.config.ctime:#x}, the cluster was created "
                           f"{cfg.ctime:#x})")
            return
        if not cfg.ctime:
            log.info("joined an unformatted cluster")
            self._claimed = set(x.get("claimed", []))
            self._unclean_claims = set(x.get("unclean", []))
            # A formatted node brings its cluster to the unformatted ones,
            # as Sheepdog's join takes the joiner's cluster info: our claim
            # makes them adopt it (see _adopt_claim).
            self._after_synced()
            return
        rejoin = self.formatted
        ours = mship.entries_to_json(self.table, locks=False) if rejoin else []
        if not self.formatted:
            await self._adopt_config(cfg)
        elif status == ClusterStatus.OK:
            # We were away while the cluster ran: every copy we hold may be
            # old, and a copy left in obj/ would be served as current, to
            # clients and to other nodes' recovery, before our recovery
            # replaced it. As Sheepdog's purge_obj does, each moves to
            # .stale/ as of our last epoch: recovery pulls what we own from
            # the nodes that stayed, and one nobody else has comes back
            # from there.
            log.info("rejoining a running cluster at epoch %d (ours was %d)",
                     int(x["epoch"]), self.epoch)
            await trio.to_thread.run_sync(self._all_to_stale, self.epoch)
        cfg.shutdown = False
        self.config = cfg
        self.config.save(self.root)
        self._rings.clear()
        history = mship.epochs_from_json(x["epochs"])
        sync_epoch = int(x["epoch"])
        if status == ClusterStatus.OK or not rejoin:
            for ep, nodes, stamp in history:
                self.epochs.write(ep, nodes, stamp)
            self._set_epoch(sync_epoch)
            mship.replace_entries(self.table, mship.entries_from_json(x["vdis"]))
        else:
            mship.merge_entries(self.table, mship.entries_from_json(x["vdis"]))
            if sync_epoch > self.epoch:
                for ep, nodes, stamp in history:
                    if ep > self.epoch:
                        self.epochs.write(ep, nodes, stamp)
                self._set_epoch(sync_epoch)
        self._claimed = set(x.get("claimed", []))
        self._unclean_claims = set(x.get("unclean", []))
        self.status = status
        log.info("joined: cluster %s at epoch %d, %d VDIs", status.name, self.epoch,
                 len(self.table.entries))
        if status == ClusterStatus.OK:
            if ours:
                self._send(mship.VDIS, {"vdis": ours})
            self._start_recovery()
        else:
            self._after_synced()  # a waiting cluster waits for our claim too

    def _all_to_stale(self, epoch: int) -> None:
        moved = 0
        for oid in list(self.store.oids()):
            try:
                self.store.move_to_stale(oid, epoch)
                moved += 1
            except NoObject:
                continue
        log.info("moved %d objects to .stale/ as of epoch %d", moved, epoch)

    def _send(self, kind: str, extra: dict) -> None:
        """Broadcast a membership message (without waiting for it)."""
        msg = ClusterMsg(kind, 0, self.key, extra=extra).encode()

        async def send() -> None:
            try:
                await self.driver.broadcast(msg)
            except Exception:
                log.exception("cannot broadcast a %s message", kind)

        if self._nursery is not None:
            self._nursery.start_soon(send)

    def _syncer(self) -> str | None:
        """The member that answers joiners: the first one already in sync."""
        for n in self.members:
            if str(n.nid) not in self._pending_sync:
                return str(n.nid)
        return None

    def _send_sync(self, to: str, seq: int) -> None:
        history = self._epoch_history()
        self._send(mship.SYNC, {
            "to": to, "seq": seq, "config": mship.config_to_json(self.config),
            "status": int(self.status), "epoch": self.epoch,
            "epochs": mship.epochs_to_json(history),
            "vdis": mship.entries_to_json(self.table, locks=True),
            "pending": {k: v for k, v in self._pending_sync.items() if k != to},
            "claimed": sorted(self._claimed),
            "unclean": sorted(self._unclean_claims)})

    async def _membership(self, ev: Joined | Left) -> None:
        before = self._syncer()
        self.members = list(ev.members)
        key = str(ev.node.nid)
        if isinstance(ev, Left):
            self._pending_sync.pop(key, None)
            self._claimed.discard(key)
            freed = self.table.release_owner(f"{ev.node.nid}/")
            if freed:
                log.info("released locks of %s on %s", ev.node.nid,
                         ", ".join(f"{v:x}" for v in freed))
            if before == key and self._syncer() == self.key:
                for k, seq in self._pending_sync.items():
                    self._send_sync(k, seq)
        else:
            self._pending_sync[key] = ev.seq
        if self.formatted and self.status == ClusterStatus.OK:
            self._new_epoch()
        if isinstance(ev, Joined) and self._syncer() == self.key:
            self._send_sync(key, ev.seq)
        if self.formatted and self.status == ClusterStatus.OK:
            self._start_recovery()
        elif self.status == ClusterStatus.WAIT:
            self._maybe_resume()

    async def _apply_member_msg(self, msg: ClusterMsg) -> None:
        x = msg.extra
        if msg.kind == mship.SYNC:
            self._pending_sync.pop(str(x.get("to")), None)
        elif msg.kind == mship.CLAIM:
            if self.status != ClusterStatus.WAIT:
                return
            adopted = False
            if not self.formatted:
                if "config" not in x:
                    return
                await self._adopt_claim(msg)
                adopted = True
            elif x.get("config", {}).get("ctime", self.config.ctime) != self.config.ctime:
                # Two clusters' nodes met in an unformatted one: the first
                # claim in the stream made it theirs. The other claimer
                # sees that claim before its own, and refuses itself; the
                # rest ignore its claim (it is no member of theirs).
                if self.key not in self._claimed:
                    self.fail_stop(f"refusing to join: the cluster became {msg.origin}'s "
                                   f"(created {x['config']['ctime']:#x}), this node's "
                                   f"store belongs to another (created {self.config.ctime:#x})")
                return
            mship.merge_entries(self.table, mship.entries_from_json(x["vdis"]))
            ep = int(x["epoch"])
            if ep > self.epoch:
                self.epochs.write(ep, [mship.node_from_json(n) for n in x["nodes"]])
                self._rings.pop(ep, None)
                self._set_epoch(ep)
            self._claimed.add(msg.origin)
            if x.get("unclean"):
                self._unclean_claims.add(msg.origin)
            self._maybe_resume()
            if adopted:
                self._after_synced()  # our own claim, now of that cluster
        elif msg.kind == mship.VDIS:
            if self.formatted:
                mship.merge_entries(self.table, mship.entries_from_json(x["vdis"]))
        elif msg.kind == mship.RECOVERED:
            ep = int(x["epoch"])
            if ep != self.epoch or self.status != ClusterStatus.OK:
                return
            done = self._recovered.setdefault(ep, set())
            done.add(msg.origin)
            ok = self._recovered_ok.setdefault(ep, set())
            if x.get("ok", True):
                ok.add(msg.origin)
            alive = {str(n.nid) for n in self.members}
            if alive <= done and self._nursery is not None:
                self._nursery.start_soon(self._purge_stale, ep, alive <= ok)
        elif msg.kind == mship.FORCE:
            result = Res.FORCE_RECOVER
            if self.status == ClusterStatus.WAIT and self.formatted:
                self.status = ClusterStatus.OK
                self._new_epoch()
                self._start_recovery()
                log.info("recovery forced: running with %d nodes at epoch %d",
                         len(self.members), self.epoch)
                result = Res.SUCCESS
            if msg.origin == self.key:
                waiter = self._waiters.get(msg.op_id)
                if waiter is not None:
                    waiter.reply = Reply(result)
                    waiter.done.set()

    def _maybe_resume(self) -> None:
        """A waiting cluster runs once every node of its last epoch is back
        (and has told us what it holds)."""
        if not self.formatted or self.status != ClusterStatus.WAIT \
                or self._sync_wait is not None:
            return
        want = {str(n.nid) for n in self._epoch_nodes(self.epoch)}
        here = {str(n.nid) for n in self.members}
        # Every node here must have claimed, not only the last epoch's: a
        # node that joined but whose claim is still on its way may hold a
        # later epoch (with other nodes to wait for).
        if not want or not want <= here or not here <= self._claimed:
            return
        self.status = ClusterStatus.OK
        reconcile, self._unclean_claims = bool(self._unclean_claims), set()
        if want != here:
            self._new_epoch()
        if want != here:
            self._start_recovery(reconcile=reconcile)
        elif reconcile and self._nursery is not None:
            # After an unclean stop, copies may differ in the writes that
            # were never flushed: every node makes its copies the first
            # owner's (see recovery.py).
            self.recovery.start(self._nursery, self.epoch, reconcile=True, same_ring=True)
        log.info("cluster is running at epoch %d%s", self.epoch,
                 " (comparing copies after an unclean stop)" if reconcile else "")

    def _new_epoch(self) -> None:
        # Sorted by node id, as Sheepdog keeps an epoch's node list.
        from ..proto.node import addr_to_bytes

        nodes = sorted(self.members, key=lambda n: (addr_to_bytes(n.nid.addr), n.nid.port))
        self.epochs.write(self.epoch + 1, nodes)
        self._rings.pop(self.epoch + 1, None)
        self._set_epoch(self.epoch + 1)
        log.info("epoch %d: %s", self.epoch, ", ".join(str(n.nid) for n in self.members))

    def _start_recovery(self, *, reconcile: bool = False) -> None:
        if self._nursery is not None:
            self.recovery.start(self._nursery, self.epoch, reconcile=reconcile)

    async def recovery_done(self, epoch: int, ok: bool = True) -> None:
        """Our recovery for `epoch` finished (`ok`: every object we own is
        here): tell everybody."""
        if epoch == self.epoch:
            self._send(mship.RECOVERED, {"epoch": epoch, "ok": ok})

    async def _purge_stale(self, epoch: int, full: bool) -> None:
        """Every member has recovered `epoch`: objects we do not own under
        its ring move to obj/.stale/OID.LAST, LAST being the last epoch we
        owned them in (the copy is the object as of that epoch), older stale
        copies of the same object go. When the recovery was `full` (no
        member missed an object), stale copies made before this epoch
        (LAST < epoch - 1) are no longer needed and are deleted."""
        ring = self.ring_at(epoch)
        if ring is None or self.me.nr_vnodes == 0:
            return
        me = self.me.nid
        back = [(ep, r) for ep in range(epoch - 1, max(0, epoch - 1 - EPOCHS_BACK), -1)
                if (r := self.ring_at(ep)) is not None]

        def last_owned(oid: int, copies: int) -> int:
            for ep, r in back:
                if any(o.nid == me for o in r.oid_to_nodes(oid, copies)):
                    return ep
            return 1

        def purge() -> tuple[int, int]:
            tags: dict[int, list[int]] = {}
            for oid, ep in self.store.stale_copies():
                tags.setdefault(oid, []).append(ep)
            moved = dropped = 0
            for oid in list(self.store.oids()):
                if self.epoch != epoch:
                    return moved, dropped
                copies = self.copies_of(oid)
                if any(o.nid == me for o in ring.oid_to_nodes(oid, copies)):
                    continue
                tag = last_owned(oid, copies)
                try:
                    self.store.move_to_stale(oid, tag)
                    moved += 1
                except StoreError:
                    continue
                for old in tags.pop(oid, []):
                    if old != tag:
                        self.store.remove_stale(oid, old)
                tags[oid] = [tag]
            if full:
                for oid, eps in tags.items():
                    for ep in eps:
                        if ep < epoch - 1 and self.epoch == epoch:
                            self.store.remove_stale(oid, ep)
                            dropped += 1
            return moved, dropped

        moved, dropped = await trio.to_thread.run_sync(purge)
        if moved or dropped:
            log.info("epoch %d: %d objects no longer ours moved to .stale, %d older stale "
                     "copies deleted", epoch, moved, dropped)

    def stale_copy(self, oid: int, since: int) -> int | None:
        """The epoch of our newest stale copy of `oid` if it is at least
        `since` (the object as of epoch `since` or later), else None."""
        best = max((ep for o, ep in self.store.stale_copies() if o == oid), default=None)
        return best if best is not None and best >= since else None

    # ---- what cluster ops change (cluster_ops.py) ----

    def stream_idle(self) -> bool:
        """Nothing ordered is queued or running here (see get_vdi_info)."""
        return not self._queue and not self._running_block

    def adopt_format(self, config: NodeConfig) -> None:
        """MAKE_FS's main half once the store is formatted: a new cluster
        at epoch 1 with this node's members, everything before forgotten."""
        self.config = config
        self.config.save(self.root)
        self.epochs.clear()
        self._rings.clear()
        self.table.reset()
        self.recovery.stop()
        self._set_epoch(0)
        self._new_epoch()
        self.status = ClusterStatus.OK

    def shut_down(self) -> None:
        """SHUTDOWN's main half: remember a clean cluster-wide stop, then go."""
        self.recovery.stop()
        self.status = ClusterStatus.SHUTDOWN
        self.config.shutdown = True
        if self.formatted:
            self.config.save(self.root)
        self.stop_soon()

    # ---- dispatch ----

    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply:
        info = OPS.get(req.opcode)
        if info is None:
            log.warning("unknown opcode %#x from %s", req.opcode, caller.peer)
            return Reply(Res.INVALID_PARMS)
        # Every field before any use, whatever the cluster's state: a
        # malformed request gets its code even from a waiting node.
        bad = wire_checks.refused(req, data, self)
        if bad is not None:
            log.warning("refusing %s from %s: %s: %s", Op(req.opcode).name,
                        shown(caller.peer), bad.field, bad.why)
            return Reply(bad.code)
        if self.status == ClusterStatus.KILLED:
            return Reply(Res.KILLED)
        if self.status == ClusterStatus.SHUTDOWN:
            return Reply(Res.SHUTDOWN)
        if self.status == ClusterStatus.WAIT and not info.force:
            # Another node may have just formatted (or resumed) the cluster
            # and acted on it: answer "waiting" only if it still holds once
            # this node has caught up. A client's I/O or cluster op waits at
            # the barrier; a peer's waits for the epoch it was sent at (a
            # barrier could wait behind the very block whose work sent it);
            # the local ops sheep ask each other (object lists, epochs) are
            # answered as they are, for the same reason.
            if info.kind is Kind.PEER:
                await self.check_request_epoch(req)
            elif info.kind in (Kind.GATEWAY, Kind.CLUSTER):
                await self.caught_up()
            if self.status == ClusterStatus.WAIT:
                return Reply(Res.WAIT_FOR_JOIN if self.formatted else Res.WAIT_FOR_FORMAT)
        if (not info.force and info.kind in (Kind.GATEWAY, Kind.CLUSTER)
                and self.halted(0, self.config.copies)):
            return Reply(Res.HALT)
        try:
            if not self.leases.active:
                self.leases.used(caller.key)
            elif info.kind is Kind.GATEWAY or req.opcode in (Op.DISCARD_OBJ, Op.FLUSH_VDI):
                vid = oid_to_vid(ObjArgs.unpack(req.args).oid)
                await self._release_sessions(self.leases.touch(caller.key, vid))
            if info.kind is Kind.CLUSTER:
                await self._release_sessions(self.leases.not_io(caller.key))
            return await info.process(self, req, data, caller)
        except (StoreError, GatewayError, VdiError, PeerError) as e:
            log.debug("opcode %#x: %s", req.opcode, e)
            return Reply(result_of(e))

    def handle_nowait(self, req: Request, data: memoryview | None,
                      caller: Caller) -> Reply | None:
        """Serve a small READ_OBJ, or a small cached WRITE_OBJ of a data
        object, at once when every step `handle` would take is immediate:
        the cluster is up and not recovering, the client is no fresh lock
        session, this node holds the copy read (or the only copy written)
        and its store's small I/O is cheap. Otherwise None, with nothing
        changed, and `handle` serves it. Why: no task, no thread hop, and the
        connection can send several such answers in one sendmsg."""
        op = req.opcode
        if op == Op.READ_OBJ:
            n = req.data_length
        elif op == Op.WRITE_OBJ and req.flags & Flag.CMD_CACHE and data is not None:
            n = len(data)
        else:
            return None
        if self.status != ClusterStatus.OK or not self.peer.inline_ok(n):
            return None
        if self.recovery.active:
            return None
        key = caller.key
        if self.leases.active and self.leases.fresh(key):
            return None
        if wire_checks.refused(req, data, self) is not None:
            return None  # `handle` answers it (and says why)
        a = ObjArgs.unpack(req.args)
        oid = a.oid
        if self.halted(0, self.config.copies) or self.halted(oid, a.copies):
            return None
        owners = self.gateway.owners(oid, a.copies)
        me = self.me.nid
        if op == Op.WRITE_OBJ:
            assert data is not None
            if not (len(owners) == 1 and owners[0].nid == me) or not is_data_obj(oid):
                return None
            gateway_ops.lease_io(self, key, oid)
            if gateway_ops.readonly(self, oid, a.offset, data):
                return Reply(Res.READONLY)
            try:
                self.peer.write_now(oid, a.offset, data, self.object_size(oid))
            except NoObject:
                return None  # `handle` may pull it first (recovery never saw it)
            except StoreError as e:
                return Reply(result_of(e))
            return Reply()
        if not any(o.nid == me for o in owners):
            return None
        buf = self.buffers.get(n)
        try:
            self.peer.read_now(oid, a.offset, memoryview(buf), self.object_size(oid))
        except StoreError as e:
            self.buffers.put(buf)
            if len(owners) > 1:
                return None  # `handle` fails over to another copy
            gateway_ops.lease_io(self, key, oid)
            return Reply(result_of(e))
        gateway_ops.lease_io(self, key, oid)
        return Reply(data=buf, pooled=buf)

    async def force_recover(self) -> int:
        """`dog cluster recover force`: run with the nodes that are here."""
        if self.status != ClusterStatus.WAIT or not self.formatted:
            return Res.FORCE_RECOVER
        op_id = next(self._op_ids)
        waiter = self._waiters[op_id] = _Waiter()
        try:
            await self.driver.broadcast(ClusterMsg(mship.FORCE, op_id, self.key).encode())
            await waiter.done.wait()
        finally:
            self._waiters.pop(op_id, None)
        return waiter.reply.result

    async def check_request_epoch(self, req: Request) -> int:
        """Sheepdog's check_request_epoch: a peer request must come from a
        node at our epoch. An older sender retries; for a newer one we wait
        a little for our own epoch to catch up."""
        if not req.epoch or req.epoch == self.epoch:
            return Res.SUCCESS
        if req.epoch < self.epoch:
            return Res.OLD_NODE_VER
        with trio.move_on_after(NEW_EPOCH_WAIT):
            while self.epoch < req.epoch:
                await self._epoch_moved.wait()
        if req.epoch == self.epoch:
            return Res.SUCCESS
        return Res.OLD_NODE_VER if req.epoch < self.epoch else Res.NEW_NODE_VER

    # ---- cluster operations: work (asking node) and main (every node) ----

    async def _release_sessions(self, releases: list[Release]) -> None:
        """Release, cluster-wide, locks whose session has no member left;
        owner-specific, so a lock re-taken by someone else meanwhile stays."""
        if not releases or self.status != ClusterStatus.OK or self.stopped.is_set():
            return
        for r in releases:
            req = Request(Op.RELEASE_VDI, 0, 0, 0, 0,
                          VdiArgs(base_vdi_id=r.vid, type=r.kind).pack())
            try:
                await self.cluster_op(req, None, Caller(r.owner),
                                      extra={"owner_gone": True, "vid": r.vid})
                log.info("released lock of %x: its client %s is gone", r.vid, r.owner)
            except Exception:
                log.exception("releasing the lock of %x held by %s failed", r.vid, r.owner)

    async def connection_closed(self, caller: Caller) -> None:
        """A client connection went away: release the locks whose session
        it was the last member of (lock_lease.py says why not all of the
        locks it took)."""
        await self._release_sessions(self.leases.closed(caller.key))
