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

import contextvars
import itertools
import logging

import trio

from ..cluster.driver import ClusterDriver, Event
from ..loglevels import python_level
from ..proto import (
    SD_DEFAULT_VNODES,
    ClusterStatus,
    NodeId,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
    oid_to_vid,
)
from ..proto.constants import ClusterFlag
from ..store import (
    BACKENDS,
    EpochStore,
    NodeConfig,
    ObjectStore,
    StoreError,
    load_node_space,
    save_node_space,
)
from . import admission, cluster_ops, gateway_ops, peer_ops, stale, wire_checks
from . import coordinator as co
from . import membership as mship
from .buffers import BufferPool
from .gateway import RETRY_TIMEOUT, Gateway, GatewayError
from .lock_lease import LockLeases
from .messages import ClusterMsg
from .optable import OPS, Kind
from .options import Options, announced_address, default_zone
from .peer import PeerOps, result_of
from .peer_client import PeerClient, PeerError
from .recovery import Recovery
from .reply import Caller, Reply
from .stats import RequestStats
from .stream_calls import IN_WORK, ClusterCalls
from .vdi_ops import VdiError, VdiOps, add_inodes, stored_inodes
from .vdi_table import VdiTable
from .view import ClusterView
from .wire_text import shown

log = logging.getLogger("sheep")

# SHUTDOWN and KILL_NODE answer before the node stops; this is how long the
# answer gets to leave (it is a courtesy to the client, not a correctness
# requirement).
STOP_DELAY = 0.2
# A fenced node (Sheep.fenced) holds client I/O as long as the gateway
# retries a request, looking this often, and says so in the log within
# FENCE_WATCH.
FENCE_WAIT = RETRY_TIMEOUT
FENCE_POLL = 0.05
FENCE_WATCH = 0.5


# The connection of the request a task serves, and how many times we had
# joined when it came (set in Sheep.handle; each request runs in its own
# task, with its own copy of the context).
CALLER: contextvars.ContextVar[tuple[Caller, int] | None] = contextvars.ContextVar(
    "CALLER", default=None)


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
        addr = announced_address(opts)
        zone = opts.zone if opts.zone is not None else default_zone(addr)
        vnodes = 0 if opts.gateway else (opts.vnodes or SD_DEFAULT_VNODES)
        space = 0 if opts.gateway else self._node_space(store)
        self.me = SdNode(NodeId(addr, opts.port), vnodes, zone, space)
        self.key = str(self.me.nid)
        self.table = VdiTable()
        self.coord = co.Coordinator(self.me, config, self.table, epoch=latest, epochs=recent,
                                    auto_vnodes=opts.vnodes is None)
        self.view = ClusterView(self.me, self.coord, self.table, self.epochs,
                                fenced=self.fenced)
        self.peer = PeerOps(store, lambda: self.epoch)
        self.peers = PeerClient()
        view = self.view
        self.gateway = Gateway(self.me, self.peer, self.peers, view.placement,
                               view.object_size, lambda: view.epoch,
                               wait_epoch=self.wait_epoch, ready=self._ready,
                               halted=view.halted, fetch_missing=self._fetch_missing,
                               strict_short=view.strict_short, member=view.is_member,
                               frozen=IN_WORK.get, fenced=self.fenced,
                               abandoned=self.abandoned, ec_of=view.ec_of,
                               stored_size=view.stored_size)
        self.vdi = VdiOps(self.gateway, self.table,
                          recycle=lambda: bool(self.config.flags & ClusterFlag.RECYCLE_VID))
        self.recovery = Recovery(view, store, self.peer, self.peers, self.vdi,
                                 self.recovery_done)
        self.leases = LockLeases()  # lock sessions of this node's clients
        self.admission = admission.Admission(opts.admin_from)
        self.loglevel = 6
        self.buffers = BufferPool()
        self.stats = RequestStats()  # what the connections served (conn.py)
        self.stopped = trio.Event()
        self.calls = ClusterCalls(self, driver, self.key, in_step=self.coord.in_step,
                                  fail_stop=self.fail_stop)
        self._conn_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._epoch_moved = trio.Event()

    def _node_space(self, store: ObjectStore) -> int:
        """The space this node announces: what its first start measured
        (see load_node_space), the free bytes of its store then."""
        space = load_node_space(self.root)
        if not space:
            size, used = store.space()
            space = size - used
            save_node_space(self.root, space)
        return space

    def start_refusal(self) -> str:
        """Why this sheep must not join with the state its store keeps,
        or "": C sheep's start-up checks. A formatted node keeps the
        cluster's vnodes strategy, which -V (fixed) or its absence (auto)
        must repeat; a fixed node must be started with the vnodes its
        last epoch gave it (`dog node vnodes set` changes them for the
        running node only)."""
        if self.opts.gateway:
            return ""
        if self.formatted and self.auto_vnodes != self.coord.local_auto:
            kept = "auto" if self.config.flags & ClusterFlag.AUTO_VNODES else "fixed"
            return (f"the stored cluster's vnodes strategy is {kept}; "
                    "start this sheep " + ("without -V" if kept == "auto" else "with -V"))
        if not self.coord.local_auto and self.epoch:
            last = self.coord.epoch_nodes(self.epoch)
            before = next((n.nr_vnodes for n in last if n.nid == self.me.nid), 0)
            if before != self.me.nr_vnodes:
                return (f"sheep -V {self.me.nr_vnodes} differs from the {before} vnodes "
                        f"this node had at epoch {self.epoch}")
        return ""

    # ---- the cluster's state (the coordinator's) ----

    @property
    def auto_vnodes(self) -> bool:
        """Whether vnodes follow space here (Coordinator.auto_vnodes)."""
        return self.coord.auto_vnodes

    @property
    def space(self) -> int:
        """The space this node announces (see _node_space)."""
        return (self.coord.announced(self.me.nid) or self.me).space

    @property
    def nr_vnodes(self) -> int:
        """This node's vnodes as it announced them (sheep -V, or the last
        `dog node vnodes set`); 128 for an auto node, 0 for a gateway."""
        return (self.coord.announced(self.me.nid) or self.me).nr_vnodes

    def update_node(self, *, nr_vnodes: int | None = None, space: int | None = None) -> None:
        """Announce this node anew with other vnodes or space."""
        cur = self.coord.announced(self.me.nid) or self.me
        new = cur._replace(nr_vnodes=cur.nr_vnodes if nr_vnodes is None else nr_vnodes,
                           space=cur.space if space is None else space)
        self._run_now(self.coord.update_node(new))

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

    @property
    def departed(self) -> dict[str, str]:
        """Nodes that left the cluster on a fault, and why."""
        return self.coord.departed

    def fenced(self) -> bool:
        """Whether the others may have expelled us without our knowing yet:
        the driver lost its lease (cut off from ZooKeeper, or stalled), or
        it joined again and we have not applied that Joined yet (nor, so,
        the Left before it). Client I/O waits meanwhile: the others may be
        writing, at an epoch without us, the objects we hold. It waits too
        while we are expelled and joining again (Coordinator.rejoining),
        instead of failing with "waiting for other nodes": in a moment we
        serve again."""
        driver = self.driver
        coord = self.coord
        return driver.fenced() or coord.own_joins < driver.incarnations or coord.rejoining

    def abandoned(self) -> bool:
        """Whether the client of the request this task serves closed its
        connection, and we have been cut off meanwhile (fenced now, or
        expelled and joined again since the request came): the gateway
        then lets the request go (Gateway._retry says why)."""
        got = CALLER.get()
        if got is None or not got[0].closed:
            return False
        return self.fenced() or self.coord.own_joins != got[1]

    async def unfenced(self, caller: Caller | None = None) -> bool:
        """Wait until not fenced, for as long as the gateway retries a
        request; False if still fenced then, or if `caller` closed its
        connection meanwhile. Why that: a client that gave up on its
        request (a timeout) may have written the same block since,
        through another sheep; this one, let go once the partition heals,
        would land on top of that write."""
        deadline = trio.current_time() + FENCE_WAIT
        while self.fenced():  # the lease comes back in a kazoo thread: no trio event
            if trio.current_time() > deadline or (caller is not None and caller.closed):
                return False
            await trio.sleep(FENCE_POLL)
        return True

    async def _watch_fence(self) -> None:
        """Say in the log when client I/O stops and starts again for want
        of the driver's lease (a wait in a request says nothing)."""
        was = False
        while True:
            now = self.fenced() and self.coord.own_joins > 0
            if now != was:
                if now:
                    log.warning("no word from the cluster driver (cut off from ZooKeeper?): "
                                "client I/O waits")
                else:
                    log.info("back in touch with the cluster driver: client I/O goes on")
                was = now
            await trio.sleep(FENCE_WATCH)

    # ---- for the gateway, which is built before recovery ----

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
        if self.formatted:
            add_inodes(self.table, await trio.to_thread.run_sync(stored_inodes, self.store))
            log.info("loaded %d VDIs", len(self.table.entries))

    async def run_cluster(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Join through the driver and apply its events until cancelled."""
        send, recv = trio.open_memory_channel[Event](1024)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.driver.run, self.me, send)
            nursery.start_soon(self._consume, recv)
            nursery.start_soon(self._watch_fence)
            task_status.started()

    async def _consume(self, recv: trio.MemoryReceiveChannel[Event]) -> None:
        """Apply the driver's events in order. A node told to stop applies
        none after that: it is leaving, and an epoch it wrote now (another
        node stopping at the same moment, as when a host or the whole
        cluster goes down) would make the restarted cluster wait for fewer
        nodes than it had (Sheepdog's test 072 stops every sheep at once)."""
        async for ev in recv:
            if self.stopped.is_set():
                continue
            try:
                await self._run(self.coord.receive(ev))
            except Exception as e:
                # Every node applies the same stream; one that could not
                # apply an event may now differ from the others, and must
                # not serve from that state (C Sheepdog aborts).
                log.exception("failed to apply cluster event %r", ev)
                self.fail_stop(f"cannot apply cluster event {type(ev).__name__}: {e!r}")

    # ---- performing the coordinator's actions ----

    async def _run(self, steps: co.Steps) -> None:
        """Perform each action before the coordinator goes on (see
        coordinator.py: an action lands where inline code would)."""
        for action in steps:
            if isinstance(action, co.ApplyMain):
                await self.calls.apply_main(action.msg)
            elif isinstance(action, co.EmptyStore):
                await self._empty_store(action.kind)
            elif isinstance(action, co.MoveAllToStale):
                await trio.to_thread.run_sync(stale.all_to_stale, self.store, action.epoch)
            else:
                self._perform_now(action)

    def _run_now(self, steps: co.Steps) -> None:
        """`_run` for inputs whose actions never wait (fail_stop, format...)."""
        for action in steps:
            self._perform_now(action)

    def _perform_now(self, action: co.Action) -> None:
        match action:
            case co.Broadcast(msg):
                self._broadcast_soon(msg)
            case co.StartWork(msg):
                assert self._nursery is not None
                self._nursery.start_soon(self.calls.do_work, msg)
            case co.Answer(op_id, result):
                self.calls.answer(op_id, Reply(result))
            case co.SaveConfig(config):
                config.save(self.root)
            case co.WriteEpoch(epoch, nodes, stamp):
                self.epochs.write(epoch, nodes, stamp)
                self.view.forget_ring(epoch)
                self._drop_departed(self.coord.epoch_nodes(epoch - 1), nodes)
            case co.ClearEpochs():
                self.epochs.clear()
                self.view.forget_rings()
            case co.EpochMoved():
                ev, self._epoch_moved = self._epoch_moved, trio.Event()
                ev.set()
            case co.StartRecovery(epoch, reconcile, same_ring):
                if self._nursery is not None:
                    self.recovery.start(self._nursery, epoch, reconcile=reconcile,
                                        same_ring=same_ring)
            case co.StopRecovery():
                self.recovery.stop()
            case co.Expelled():
                if self._nursery is not None:
                    self._nursery.start_soon(self.peers.aclose)
            case co.PurgeStale(epoch, full):
                if self._nursery is not None:
                    self._nursery.start_soon(stale.purge, self.view, self.store, epoch, full)
            case co.FailStop(why):
                log.error("leaving the cluster: %s", why)
                self.calls.answer_all(Res.KILLED)
                self.stop_soon()
            case co.Stop():
                self.stop_soon()
            case _:
                raise AssertionError(f"{action!r} cannot be performed without waiting")

    def _drop_departed(self, before: list[SdNode], after: list[SdNode]) -> None:
        """Requests in flight to nodes an epoch left out fail now and are
        retried at that epoch (PeerClient.drop says why)."""
        staying = {n.nid for n in after} | {n.nid for n in self.members}
        for n in before:
            if n.nid not in staying and n.nid != self.me.nid and self._nursery is not None:
                self._nursery.start_soon(self.peers.drop, n.nid)

    def _broadcast_soon(self, msg: ClusterMsg) -> None:
        """Broadcast a membership message (without waiting for it)."""
        payload = msg.encode()

        async def send() -> None:
            try:
                await self.driver.broadcast(payload)
            except Exception:
                if self.stopped.is_set():  # its driver may have left already
                    log.info("%s message not sent: this node is stopping", msg.kind)
                    return
                log.exception("cannot broadcast a %s message", msg.kind)

        if self._nursery is not None:
            self._nursery.start_soon(send)

    async def _empty_store(self, kind: str) -> None:
        if kind and kind != self.store.name and self.store.can_reopen and kind in BACKENDS:
            await trio.to_thread.run_sync(self.store.reopen, kind)
        await trio.to_thread.run_sync(self.store.format)

    # ---- the ordered stream ----

    async def recovery_done(self, epoch: int, ok: bool = True) -> None:
        """Our recovery for `epoch` finished (`ok`: every object we own is
        here): tell everybody."""
        self._run_now(self.coord.recovered(epoch, ok))

    # ---- what cluster ops change (cluster_ops.py) ----

    def stream_idle(self) -> bool:
        """Nothing ordered is queued or running here (see get_vdi_info)."""
        return self.coord.stream_idle()

    def adopt_format(self, config: NodeConfig) -> None:
        """MAKE_FS's main half once the store is formatted."""
        self._run_now(self.coord.format(config))

    def set_auto_recovery(self, on: bool) -> None:
        """ENABLE_RECOVER / DISABLE_RECOVER's main half: a suspended
        recovery goes on once enabled."""
        self.coord.set_auto_recovery(on)
        if on:
            self.recovery.resume()

    def set_cluster_copies(self, copies: int) -> None:
        """ALTER_CLUSTER_COPY's main half."""
        self._run_now(self.coord.set_copies(copies))

    def placement_changed(self) -> None:
        """ALTER_VDI_COPY's main half, once the VDI table has the new copies."""
        self._run_now(self.coord.placement_changed())

    def shut_down(self) -> None:
        """SHUTDOWN's main half."""
        self._run_now(self.coord.shut_down())

    # ---- dispatch ----

    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply:
        info = OPS.get(req.opcode)
        if info is None:
            log.warning("unknown opcode %#x from %s", req.opcode, caller.peer)
            return Reply(Res.INVALID_PARMS)
        # Who asks before what: a host that may not administer the cluster
        # learns nothing from a format or shutdown, whatever its state.
        if req.opcode in admission.ADMIN_OPS and not self.admission.admits(
                req.opcode, caller.peer, self._member_addresses()):
            return Reply(admission.REFUSED)
        # Every field before any use, whatever the cluster's state: a
        # malformed request gets its code even from a waiting node.
        bad = wire_checks.refused(req, data, self.view)
        if bad is not None:
            log.warning("refusing %s from %s: %s: %s", Op(req.opcode).name,
                        shown(caller.peer), bad.field, bad.why)
            return Reply(bad.code)
        if info.kind is Kind.GATEWAY and not info.force and self.fenced() \
                and not await self.unfenced(caller):
            return Reply(Res.HALT)
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
                await peer_ops.check_request_epoch(self, req)
            elif info.kind in (Kind.GATEWAY, Kind.CLUSTER):
                await self.calls.caught_up()
            if self.status == ClusterStatus.WAIT:
                return Reply(Res.WAIT_FOR_JOIN if self.formatted else Res.WAIT_FOR_FORMAT)
        # Only object I/O halts, as in Sheepdog's queue_gateway_request: a
        # cluster op goes on and fails on the I/O it does (a VDI created in
        # a cluster of gateways is "Failed to write to requested VDI").
        if (not info.force and info.kind is Kind.GATEWAY
                and self.view.halted(0, self.config.copies)):
            return Reply(Res.HALT)
        CALLER.set((caller, self.coord.own_joins))
        try:
            if not self.leases.active:
                self.leases.used(caller.key)
            elif info.kind is Kind.GATEWAY or req.opcode in (Op.DISCARD_OBJ, Op.FLUSH_VDI):
                vid = oid_to_vid(ObjArgs.unpack(req.args).oid)
                await cluster_ops.release_sessions(self, self.leases.touch(caller.key, vid))
            if info.kind is Kind.CLUSTER:
                await cluster_ops.release_sessions(self, self.leases.not_io(caller.key))
            return await info.process(self, req, data, caller)
        except (StoreError, GatewayError, VdiError, PeerError) as e:
            log.debug("opcode %#x: %s", req.opcode, e)
            return Reply(result_of(e))

    def _member_addresses(self) -> set[admission.Address]:
        """The addresses of the nodes in the cluster now and in its latest
        epoch (a restarting cluster waits for nodes its epoch names: their
        hosts may still run `dog cluster recover force`)."""
        nodes = [*self.members, *self.coord.epoch_nodes(self.epoch)]
        return {ip for n in nodes if (ip := admission.parse_address(n.nid.addr)) is not None}

    def handle_nowait(self, req: Request, data: memoryview | None,
                      caller: Caller) -> Reply | None:
        """The inline fast path (gateway_ops' or peer_ops' serve_now), or None."""
        if req.opcode in peer_ops.SERVED_NOW:
            return peer_ops.serve_now(self, req, data, caller)
        return gateway_ops.serve_now(self, req, data, caller)

    async def connection_closed(self, caller: Caller) -> None:
        """A client connection went away: release the locks whose session
        it was the last member of (lock_lease.py says why not all of the
        locks it took)."""
        await cluster_ops.release_sessions(self, self.leases.closed(caller.key))
