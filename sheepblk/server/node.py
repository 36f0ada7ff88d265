"""One sheep: its state, the request dispatcher and the ordered cluster stream.

Request flow: the connection layer hands every decoded request to
`Sheep.handle`, which checks the cluster status, then routes by the op
table: gateway ops to the Gateway, peer ops to PeerOps, local ops to
local_ops, cluster ops into the driver's ordered stream (see messages.py).
Everything a cluster operation changes is applied in `_apply_main`, which
every node runs for every operation in the same order.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ..cluster.driver import ClusterDriver, Event, Joined, Left, Message
from ..cluster.ring import Ring
from ..proto import (
    SD_DEFAULT_VNODES,
    ClusterArgs,
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
    VdiResult,
    data_vid_offset,
    get_objsize,
    is_data_obj,
    is_vdi_obj,
    oid_to_vid,
)
from ..proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT, SD_DEFAULT_COPIES, ClusterFlag
from ..proto.inode import SD_INODE_HEADER_SIZE
from ..store import BACKENDS, EpochStore, NodeConfig, ObjectStore, StoreError
from . import local_ops, md_ops
from .buffers import BufferPool
from .gateway import Gateway, GatewayError
from .lock_lease import LockLeases, Release
from .messages import BadMessage, ClusterMsg
from .optable import OPS, Kind
from .peer import PeerOps, result_of
from .peer_client import PeerClient, PeerError
from .reply import Caller, Reply
from .vdi_ops import VdiError, VdiOps, parse_name
from .vdi_table import VdiEntry, VdiTable

log = logging.getLogger("sheep")

# SHUTDOWN and KILL_NODE answer before the node stops; this is how long the
# answer gets to leave (it is a courtesy to the client, not a correctness
# requirement).
STOP_DELAY = 0.2


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
        self.peer = PeerOps(store)
        self.peers = PeerClient()
        self.gateway = Gateway(self.me, self.peer, self.peers, self.placement,
                               self.object_size, lambda: self.epoch)
        self.vdi = VdiOps(self.gateway, self.table)
        self.leases = LockLeases()  # lock sessions of this node's clients
        self.loglevel = 6
        self.buffers = BufferPool()
        self.stopped = trio.Event()
        self._queue: deque[ClusterMsg | Event] = deque()
        self._running_block = False
        self._waiters: dict[int, _Waiter] = {}
        self._op_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._joined = False
        self._ring: Ring | None = None
        self._ring_members: list[SdNode] = []

    # ---- placement and sizes ----

    def placement(self, oid: int, copies: int) -> Sequence[SdNode]:
        """The owners of an object: this node alone while it is the only
        member, else the ring of the current members."""
        if len(self.members) <= 1:
            return [self.me]
        if self._ring is None or self._ring_members != self.members:
            self._ring = Ring(self.members)
            self._ring_members = list(self.members)
        if not copies:
            e = self.table.get(oid_to_vid(oid))
            copies = (e.copies if e else 0) or self.config.copies or SD_DEFAULT_COPIES
        return self._ring.oid_to_nodes(oid, copies) or [self.me]

    def stop_soon(self) -> None:
        """Stop after the answer that asked for it has gone out."""

        async def later() -> None:
            await trio.sleep(STOP_DELAY)
            self.stopped.set()

        if self._nursery is not None:
            self._nursery.start_soon(later)
        else:
            self.stopped.set()

    def set_loglevel(self, level: int) -> None:
        """Sheepdog's 0 (emerg) .. 7 (debug) onto Python logging levels."""
        self.loglevel = level
        py = {7: logging.DEBUG, 6: logging.INFO, 5: logging.INFO, 4: logging.WARNING}
        logging.getLogger().setLevel(py.get(level, logging.ERROR))

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
            self.table.add(VdiEntry(h.vdi_id, h.nr_copies, h.copy_policy,
                                    h.block_size_shift, h.is_snapshot, deleted=not h.name,
                                    parent=h.parent_vdi_id))
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
            except Exception:
                log.exception("failed to apply cluster event %r", ev)

    # ---- the ordered stream ----

    async def _on_event(self, ev: Event) -> None:
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
                await self._apply_main(head)
            elif isinstance(head, Joined | Left):
                self._membership(head)

    async def cluster_op(self, req: Request, data: memoryview | None, caller: Caller,
                         extra: dict | None = None) -> Reply:
        info = OPS[req.opcode]
        op_id = next(self._op_ids)
        waiter = self._waiters[op_id] = _Waiter()
        msg = ClusterMsg("block" if info.work else "notify", op_id, self.key, req.pack(),
                         bytes(data) if data is not None else b"", caller.key,
                         extra=extra or {})
        try:
            await self.driver.broadcast(msg.encode())
            await waiter.done.wait()
        finally:
            self._waiters.pop(op_id, None)
        return waiter.reply

    async def _do_work(self, msg: ClusterMsg) -> None:
        req = Request.unpack(msg.req)
        try:
            reply, extra = await self._work(req, memoryview(msg.data), msg.owner)
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
        if result == Res.SUCCESS and info is not None and info.main:
            try:
                result = await self._main(req, msg)
            except Exception:
                log.exception("applying opcode %#x failed", req.opcode)
                result = Res.SYSTEM_ERROR
        if msg.origin == self.key:
            waiter = self._waiters.get(msg.op_id)
            if waiter is not None:
                waiter.reply = Reply(result, msg.rsp_args)
                waiter.done.set()

    # ---- membership ----

    def _membership(self, ev: Joined | Left) -> None:
        self.members = list(ev.members)
        if isinstance(ev, Left):
            freed = self.table.release_owner(f"{ev.node.nid}/")
            if freed:
                log.info("released locks of %s on %s", ev.node.nid,
                         ", ".join(f"{v:x}" for v in freed))
        if isinstance(ev, Joined) and ev.node.nid == self.me.nid:
            self._joined = True
        if not self._joined or not self.formatted:
            return
        nids = {n.nid for n in self.members}
        if self.status == ClusterStatus.WAIT:
            last = self.epochs.read(self.epoch)
            want = {n.nid for n in last[0]} if last else set()
            if want <= nids:
                self.status = ClusterStatus.OK
                if want != nids:
                    self._new_epoch()
                log.info("cluster is running at epoch %d", self.epoch)
        elif self.status == ClusterStatus.OK:
            self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.epochs.write(self.epoch, self.members)
        log.info("epoch %d: %s", self.epoch, ", ".join(str(n.nid) for n in self.members))

    # ---- dispatch ----

    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply:
        info = OPS.get(req.opcode)
        if info is None:
            log.warning("unknown opcode %#x from %s", req.opcode, caller.peer)
            return Reply(Res.INVALID_PARMS)
        if self.status == ClusterStatus.KILLED:
            return Reply(Res.KILLED)
        if self.status == ClusterStatus.SHUTDOWN:
            return Reply(Res.SHUTDOWN)
        if self.status == ClusterStatus.WAIT and not info.force:
            return Reply(Res.WAIT_FOR_JOIN if self.formatted else Res.WAIT_FOR_FORMAT)
        try:
            if not self.leases.active:
                self.leases.used(caller.key)
            elif info.kind is Kind.GATEWAY or req.opcode in (Op.DISCARD_OBJ, Op.FLUSH_VDI):
                vid = oid_to_vid(ObjArgs.unpack(req.args).oid)
                await self._release_sessions(self.leases.touch(caller.key, vid))
            if info.kind is Kind.GATEWAY:
                return await self._gateway_op(req, data)
            if info.kind is Kind.PEER:
                return await self._peer_op(req, data)
            if info.kind is Kind.LOCAL:
                return await local_ops.run(self, req, data, caller)
            await self._release_sessions(self.leases.not_io(caller.key))
            if req.opcode in (Op.LOCK_VDI, Op.RELEASE_VDI):
                return await self._lock_op(req, data, caller)
            if req.opcode == Op.GET_VDI_INFO and not self._queue and not self._running_block:
                # A read-only lookup with nothing ordered ahead of it: answer
                # now instead of paying a round trip through the stream.
                reply, _ = await self._work(req, data if data is not None else memoryview(b""),
                                            caller.key)
                return reply
            return await self.cluster_op(req, data, caller)
        except (StoreError, GatewayError, VdiError, PeerError) as e:
            log.debug("opcode %#x: %s", req.opcode, e)
            return Reply(result_of(e))

    def _readonly(self, oid: int, offset: int, data: memoryview | None) -> bool:
        """Writes to a snapshot's objects are refused, except zeroing its
        index entries, which Sheepdog's dog does before deleting it."""
        vid = oid_to_vid(oid)
        if not self.table.is_snapshot(vid):
            return False
        if is_data_obj(oid):
            return True
        if is_vdi_obj(oid):
            return not (offset >= data_vid_offset(0) and data is not None
                        and not any(data))
        return False

    async def _gateway_op(self, req: Request, data: memoryview | None) -> Reply:
        a = ObjArgs.unpack(req.args)
        if req.opcode == Op.READ_OBJ:
            buf = self.buffers.get(req.data_length)
            try:
                await self.gateway.read(a.oid, a.offset, memoryview(buf), copies=a.copies)
            except BaseException:
                self.buffers.put(buf)
                raise
            return Reply(data=buf, pooled=buf)
        if req.opcode == Op.REMOVE_OBJ:
            await self.gateway.remove(a.oid, copies=a.copies)
            return Reply()
        payload = data if data is not None else memoryview(b"")
        if self._readonly(a.oid, a.offset, payload):
            return Reply(Res.READONLY)
        sync = not (req.flags & Flag.CMD_CACHE)
        if req.opcode == Op.WRITE_OBJ:
            # An index write may leave objects nobody maps: free them after.
            old = await self.vdi.index_before(a.oid, a.offset, payload)
            await self.gateway.write(a.oid, a.offset, payload, sync=sync, copies=a.copies)
            if old is not None:
                await self.vdi.index_after(a.oid, a.offset, payload, old)
        else:
            cow = a.cow_oid if req.flags & Flag.CMD_COW else 0
            await self.gateway.create_and_write(a.oid, a.offset, payload, sync=sync,
                                                cow_oid=cow, copies=a.copies)
        return Reply()

    async def _peer_op(self, req: Request, data: memoryview | None) -> Reply:
        a = ObjArgs.unpack(req.args)
        size = self.object_size(a.oid)
        sync = not (req.flags & Flag.CMD_CACHE)
        payload = data if data is not None else memoryview(b"")
        if req.opcode == Op.READ_PEER:
            buf = self.buffers.get(req.data_length)
            try:
                await self.peer.read(a.oid, a.offset, memoryview(buf), size)
            except BaseException:
                self.buffers.put(buf)
                raise
            return Reply(data=buf, pooled=buf)
        if req.opcode == Op.WRITE_PEER:
            await self.peer.write(a.oid, a.offset, payload, size, sync=sync)
        elif req.opcode == Op.CREATE_AND_WRITE_PEER:
            cow = a.cow_oid if req.flags & Flag.CMD_COW else 0
            await self.peer.create_and_write(a.oid, a.offset, payload, size, cow_oid=cow,
                                             sync=sync)
        elif req.opcode == Op.REMOVE_PEER:
            await self.peer.remove(a.oid)
        elif req.opcode == Op.FLUSH_PEER:
            await self.peer.flush()
        return Reply()

    # ---- cluster operations: work (asking node) and main (every node) ----

    async def _work(self, req: Request, data: memoryview, owner: str) -> tuple[Reply, dict]:
        v = VdiArgs.unpack(req.args)
        op = req.opcode
        if op == Op.NEW_VDI:
            name, _ = parse_name(data, with_tag=False)
            copies, policy = v.copies, v.copy_policy
            if not copies:
                copies = self.config.copies or SD_DEFAULT_COPIES
                policy = self.config.copy_policy
            shift = v.block_size_shift or self.config.block_size_shift
            out = await self.vdi.create(name, v.vdi_size, base_vid=v.base_vdi_id,
                                        snapshot=bool(v.snapid), copies=copies,
                                        copy_policy=policy, store_policy=v.store_policy,
                                        block_size_shift=shift)
            args = VdiResult(vdi_id=out.vid, copies=copies, block_size_shift=shift).pack()
            return Reply(args=args), {"vid": out.vid, "copies": copies, "policy": policy,
                                      "shift": shift, "old_vid": out.old_vid,
                                      "parent": out.parent, "snapshot": bool(v.snapid)}
        if op in (Op.GET_VDI_INFO, Op.LOCK_VDI, Op.DEL_VDI):
            name, tag = parse_name(data)
            if op == Op.DEL_VDI:
                out = await self.vdi.delete(name, tag, v.snapid)
                return Reply(args=VdiResult(vdi_id=out.vid).pack()), {"vid": out.vid}
            vid = await self.vdi.find(name, tag, v.snapid)
            e = self.table.get(vid)
            args = VdiResult(vdi_id=vid, copies=e.copies if e else 0,
                             block_size_shift=e.block_size_shift if e else 22).pack()
            return Reply(args=args), {"vid": vid}
        if op == Op.GET_VDI_ATTR:
            out = await self.vdi.attr(data, v.snapid, create=bool(req.flags & Flag.CMD_WILDCARD),
                                      excl=bool(req.flags & Flag.CMD_EXCL),
                                      delete=bool(req.flags & Flag.CMD_DEL))
            args = VdiResult(vdi_id=out.vid, attr_id=out.attr_id, copies=out.copies).pack()
            return Reply(args=args), {}
        return Reply(Res.NO_SUPPORT), {}

    async def _main(self, req: Request, msg: ClusterMsg) -> int:
        op = req.opcode
        x = msg.extra
        if op == Op.NEW_VDI:
            self.table.add(VdiEntry(x["vid"], x["copies"], x["policy"], x["shift"],
                                    parent=x["parent"]))
            if x.get("old_vid") and x.get("snapshot"):
                self.table.mark_snapshot(x["old_vid"])
            return Res.SUCCESS
        if op == Op.DEL_VDI:
            self.table.mark_deleted(x["vid"])
            return Res.SUCCESS
        if op == Op.LOCK_VDI:
            kind = VdiArgs.unpack(req.args).type
            ok = self.table.lock(x["vid"], msg.owner, kind)
            return Res.SUCCESS if ok else Res.VDI_LOCKED
        if op == Op.RELEASE_VDI:
            if x.get("owner_gone"):
                self.table.release_owner(msg.owner, x.get("vid"))
            else:
                v = VdiArgs.unpack(req.args)
                self.table.unlock(v.base_vdi_id, msg.owner, v.type)
            return Res.SUCCESS
        if op == Op.MAKE_FS:
            return await self._make_fs(req, msg)
        if op == Op.NOTIFY_VDI_ADD:
            return md_ops.notify_vdi_add(self.table, req)
        if op == Op.SHUTDOWN:
            self.status = ClusterStatus.SHUTDOWN
            self.config.shutdown = True
            if self.formatted:
                self.config.save(self.root)
            self.stop_soon()
            return Res.SUCCESS
        return Res.SUCCESS

    async def _make_fs(self, req: Request, msg: ClusterMsg) -> int:
        c = ClusterArgs.unpack(req.args)
        store_name = msg.data.split(b"\0", 1)[0].decode(errors="replace") or "plain"
        if store_name != self.store.name:
            # A multi-disk store switches every disk's backend (plain <-> farm).
            reopen = getattr(self.store, "reopen", None)
            if reopen is None or store_name not in BACKENDS:
                return Res.NO_STORE
            await trio.to_thread.run_sync(reopen, store_name)
        await trio.to_thread.run_sync(self.store.format)
        flags = c.flags
        if self.auto_vnodes:
            flags |= ClusterFlag.AUTO_VNODES
        self.config = NodeConfig(ctime=c.ctime or int(time.time()) << 32,
                                 copies=c.copies or SD_DEFAULT_COPIES,
                                 copy_policy=c.copy_policy, flags=flags,
                                 block_size_shift=c.block_size_shift
                                 or SD_DEFAULT_BLOCK_SIZE_SHIFT,
                                 store=store_name)
        self.config.save(self.root)
        self.epochs.clear()
        self.table.reset()
        self.epoch = 0
        self._new_epoch()
        self.status = ClusterStatus.OK
        log.info("formatted: %d copies, store %s", self.config.copies, store_name)
        return Res.SUCCESS

    async def _lock_op(self, req: Request, data: memoryview | None, caller: Caller) -> Reply:
        """LOCK_VDI / RELEASE_VDI through the stream, then the lock
        session bookkeeping of this node (see lock_lease.py)."""
        caller.holds_locks = True
        reply = await self.cluster_op(req, data, caller)
        if reply.result == Res.SUCCESS:
            v = VdiArgs.unpack(req.args)
            if req.opcode == Op.LOCK_VDI:
                self.leases.locked(caller.key, VdiResult.unpack(reply.args).vdi_id, v.type)
            else:
                self.leases.released(caller.key, v.base_vdi_id, v.type)
        return reply

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
