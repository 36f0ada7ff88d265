"""One sheep: the request dispatcher, and the shell that performs what the
coordinator decides.

Request flow: the connection layer hands every decoded request to
`Sheep.handle`, which checks its fields (wire_checks) and the cluster
status, then calls the handler the op table (optable.py) names for the
opcode: gateway_ops, peer_ops, local_ops, md_ops, or cluster_ops, whose
ops go through the driver's ordered stream (see messages.py). A cluster
op's main half runs in `_apply_main`, on every node for every operation
in the same order.

The cluster's state (members, epoch, status, the ordered queue, the join
protocol) is the coordinator's (coordinator.py), a state machine without
I/O: this class feeds it the driver's events and performs the actions it
yields (broadcasts, main halves, epoch logs, recovery), in order.
"""

from __future__ import annotations

import itertools
import logging
from contextvars import ContextVar

import trio

from ..cluster.driver import ClusterDriver, Event
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
    is_data_obj,
    is_vdi_obj,
    oid_to_vid,
)
from ..proto.constants import ClusterFlag
from ..proto.inode import SD_INODE_HEADER_SIZE
from ..store import BACKENDS, EpochStore, NodeConfig, NoObject, ObjectStore, StoreError
from . import gateway_ops, wire_checks
from . import membership as mship
from .buffers import BufferPool
from .coordinator import (
    Action,
    Answer,
    ApplyMain,
    Broadcast,
    ClearEpochs,
    Coordinator,
    EmptyStore,
    EpochMoved,
    FailStop,
    MoveAllToStale,
    PurgeStale,
    SaveConfig,
    StartRecovery,
    StartWork,
    Steps,
    Stop,
    StopRecovery,
    WriteEpoch,
)
from .gateway import RETRY_PAUSE, RETRY_TIMEOUT, Gateway, GatewayError
from .lock_lease import LockLeases, Release
from .messages import ClusterMsg
from .optable import OPS, Kind
from .options import Options
from .peer import PeerOps, result_of
from .peer_client import PeerClient, PeerError
from .recovery import EPOCHS_BACK, Recovery
from .reply import Caller, Reply
from .vdi_ops import VdiError, VdiOps, inode_names
from .vdi_table import VdiEntry, VdiTable
from .view import ClusterView
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
        config = NodeConfig.load(self.root)
        self.epochs = EpochStore(self.root)
        latest = self.epochs.latest() if config.ctime else 0
        recent = {ep: got for ep in range(max(1, latest - mship.SYNC_EPOCHS + 1), latest + 1)
                  if (got := self.epochs.read(ep)) is not None}
        addr = opts.myaddr or opts.bindaddr
        if addr in ("0.0.0.0", "::", ""):
            addr = "127.0.0.1"
        zone = opts.zone if opts.zone is not None else default_zone(addr)
        vnodes = 0 if opts.gateway else (opts.vnodes or SD_DEFAULT_VNODES)
        size, used = store.space()
        self.me = SdNode(NodeId(addr, opts.port), vnodes, zone, size - used)
        self.key = str(self.me.nid)
        self.auto_vnodes = opts.vnodes is None
        self.table = VdiTable()
        self.coord = Coordinator(self.me, config, self.table, epoch=latest, epochs=recent)
        self.view = ClusterView(self.me, self.coord, self.table, self.epochs)
        self.peer = PeerOps(store, lambda: self.epoch)
        self.peers = PeerClient()
        view = self.view
        self.gateway = Gateway(self.me, self.peer, self.peers, view.placement,
                               view.object_size, lambda: view.epoch,
                               wait_epoch=self.wait_epoch, ready=self._ready,
                               halted=view.halted, fetch_missing=self._fetch_missing,
                               strict_short=view.strict_short, member=view.is_member,
                               frozen=_IN_WORK.get)
        self.vdi = VdiOps(self.gateway, self.table,
                          recycle=lambda: bool(self.config.flags & ClusterFlag.RECYCLE_VID))
        self.recovery = Recovery(view, store, self.peer, self.peers, self.vdi,
                                 self.recovery_done)
        self.leases = LockLeases()  # lock sessions of this node's clients
        self.loglevel = 6
        self.buffers = BufferPool()
        self.stopped = trio.Event()
        self._waiters: dict[int, _Waiter] = {}
        self._op_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._epoch_moved = trio.Event()

    # ---- the cluster's state (the coordinator's) ----

    @property
    def config(self) -> NodeConfig:
        return self.coord.config

    @property
    def epoch(self) -> int:
        return self.coord.epoch

    @property
    def status(self) -> ClusterStatus:
        return self.coord.status

    @property
    def members(self) -> list[SdNode]:
        return self.coord.members

    @property
    def failed(self) -> str:
        """Why this node left the cluster (fail-stop), or ""."""
        return self.coord.failed

    @property
    def unclean(self) -> bool:
        """Whether the last run of this node ended without its final flush
        (set by the daemon from its marker file)."""
        return self.coord.unclean

    @unclean.setter
    def unclean(self, value: bool) -> None:
        self.coord.unclean = value

    @property
    def formatted(self) -> bool:
        return self.coord.formatted


    async def _ready(self, oid: int) -> None:
        await self.recovery.ready(oid)

    async def _fetch_missing(self, oid: int) -> bool:
        return await self.recovery.fetch_missing(oid)

    async def wait_epoch(self, epoch: int, delay: float) -> None:
        """Return when the epoch is no longer `epoch`, or after `delay`."""
        with trio.move_on_after(delay):
            while self.epoch == epoch:
                await self._epoch_moved.wait()

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
        """Leave the cluster for good (Coordinator.fail_stop says why);
        the process then stops, which leaves the cluster, and exits
        non-zero."""
        self._run_now(self.coord.fail_stop(why))

    def kill(self) -> None:
        """KILL_NODE: answer KILLED from now on, then stop."""
        self._run_now(self.coord.kill())

    def set_loglevel(self, level: int) -> None:
        """Sheepdog's 0 (emerg) .. 7 (debug) onto Python logging levels."""
        self.loglevel = level
        logging.getLogger().setLevel(python_level(level))

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
                await self._run(self.coord.receive(ev))
            except Exception as e:
                # Every node applies the same stream; one that could not
                # apply an event may now differ from the others, and must
                # not serve from that state (C Sheepdog aborts).
                log.exception("failed to apply cluster event %r", ev)
                self.fail_stop(f"cannot apply cluster event {type(ev).__name__}: {e!r}")

    # ---- performing the coordinator's actions ----

    async def _run(self, steps: Steps) -> None:
        """Perform each action before the coordinator goes on (see
        coordinator.py: an action lands where inline code would)."""
        for action in steps:
            if isinstance(action, ApplyMain):
                await self._apply_main(action.msg)
            elif isinstance(action, EmptyStore):
                await self._empty_store(action.kind)
            elif isinstance(action, MoveAllToStale):
                await trio.to_thread.run_sync(self._all_to_stale, action.epoch)
            else:
                self._perform_now(action)

    def _run_now(self, steps: Steps) -> None:
        """`_run` for inputs whose actions never wait (fail_stop, format...)."""
        for action in steps:
            self._perform_now(action)

    def _perform_now(self, action: Action) -> None:
        match action:
            case Broadcast(msg):
                self._broadcast_soon(msg)
            case StartWork(msg):
                assert self._nursery is not None
                self._nursery.start_soon(self._do_work, msg)
            case Answer(op_id, result):
                self._answer(op_id, Reply(result))
            case SaveConfig(config):
                config.save(self.root)
            case WriteEpoch(epoch, nodes, stamp):
                self.epochs.write(epoch, nodes, stamp)
                self.view.forget_ring(epoch)
            case ClearEpochs():
                self.epochs.clear()
                self.view.forget_rings()
            case EpochMoved():
                ev, self._epoch_moved = self._epoch_moved, trio.Event()
                ev.set()
            case StartRecovery(epoch, reconcile, same_ring):
                if self._nursery is not None:
                    self.recovery.start(self._nursery, epoch, reconcile=reconcile,
                                        same_ring=same_ring)
            case StopRecovery():
                self.recovery.stop()
            case PurgeStale(epoch, full):
                if self._nursery is not None:
                    self._nursery.start_soon(self._purge_stale, epoch, full)
            case FailStop(why):
                log.error("leaving the cluster: %s", why)
                self.stop_soon()
            case Stop():
                self.stop_soon()
            case _:
                raise AssertionError(f"{action!r} cannot be performed without waiting")

    def _broadcast_soon(self, msg: ClusterMsg) -> None:
        """Broadcast a membership message (without waiting for it)."""
        payload = msg.encode()

        async def send() -> None:
            try:
                await self.driver.broadcast(payload)
            except Exception:
                log.exception("cannot broadcast a %s message", msg.kind)

        if self._nursery is not None:
            self._nursery.start_soon(send)

    def _answer(self, op_id: int, reply: Reply) -> None:
        waiter = self._waiters.get(op_id)
        if waiter is not None:
            waiter.reply = reply
            waiter.done.set()

    async def _empty_store(self, kind: str) -> None:
        if kind and kind != self.store.name and self.store.can_reopen and kind in BACKENDS:
            await trio.to_thread.run_sync(self.store.reopen, kind)
        await trio.to_thread.run_sync(self.store.format)

    def _all_to_stale(self, epoch: int) -> None:
        moved = 0
        for oid in list(self.store.oids()):
            try:
                self.store.move_to_stale(oid, epoch)
                moved += 1
            except NoObject:
                continue
        log.info("moved %d objects to .stale/ as of epoch %d", moved, epoch)

    # ---- the ordered stream ----

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
        if self.coord.in_step():
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
            self._answer(msg.op_id, Reply(result, msg.rsp_args))

    async def recovery_done(self, epoch: int, ok: bool = True) -> None:
        """Our recovery for `epoch` finished (`ok`: every object we own is
        here): tell everybody."""
        self._run_now(self.coord.recovered(epoch, ok))

    async def _purge_stale(self, epoch: int, full: bool) -> None:
        """Every member has recovered `epoch`: objects we do not own under
        its ring move to obj/.stale/OID.LAST, LAST being the last epoch we
        owned them in (the copy is the object as of that epoch), older stale
        copies of the same object go. When the recovery was `full` (no
        member missed an object), stale copies made before this epoch
        (LAST < epoch - 1) are no longer needed and are deleted."""
        ring = self.view.ring_at(epoch)
        if ring is None or self.me.nr_vnodes == 0:
            return
        me = self.me.nid
        back = [(ep, r) for ep in range(epoch - 1, max(0, epoch - 1 - EPOCHS_BACK), -1)
                if (r := self.view.ring_at(ep)) is not None]

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
                copies = self.view.copies_of(oid)
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
        return self.coord.stream_idle()

    def adopt_format(self, config: NodeConfig) -> None:
        """MAKE_FS's main half once the store is formatted."""
        self._run_now(self.coord.format(config))

    def shut_down(self) -> None:
        """SHUTDOWN's main half."""
        self._run_now(self.coord.shut_down())

    # ---- dispatch ----

    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply:
        info = OPS.get(req.opcode)
        if info is None:
            log.warning("unknown opcode %#x from %s", req.opcode, caller.peer)
            return Reply(Res.INVALID_PARMS)
        # Every field before any use, whatever the cluster's state: a
        # malformed request gets its code even from a waiting node.
        bad = wire_checks.refused(req, data, self.view)
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
                and self.view.halted(0, self.config.copies)):
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
        if wire_checks.refused(req, data, self.view) is not None:
            return None  # `handle` answers it (and says why)
        a = ObjArgs.unpack(req.args)
        oid = a.oid
        if self.view.halted(0, self.config.copies) or self.view.halted(oid, a.copies):
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
                self.peer.write_now(oid, a.offset, data, self.view.object_size(oid))
            except NoObject:
                return None  # `handle` may pull it first (recovery never saw it)
            except StoreError as e:
                return Reply(result_of(e))
            return Reply()
        if not any(o.nid == me for o in owners):
            return None
        buf = self.buffers.get(n)
        try:
            self.peer.read_now(oid, a.offset, memoryview(buf), self.view.object_size(oid))
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
