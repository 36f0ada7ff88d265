"""Local operations: answers from this node's own state (no stream).

Each returns a Reply; layouts follow sheep/ops.c so Sheepdog's dog can
read them (STAT_CLUSTER's padded epoch log, CLUSTER_INFO's cluster_info).
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING

import trio

from ..proto import (
    SD_NODE_SIZE,
    ClusterArgs,
    ClusterDefaultResult,
    ClusterInfo,
    ClusterStatus,
    EpochLog,
    Flag,
    NodeResult,
    ObjArgs,
    RecoveryThrottle,
    Request,
    Res,
    data_oid_to_idx,
    oid_to_vid,
    pack_nodes,
    vid_to_vdi_oid,
)
from ..proto.constants import ClusterFlag
from ..proto.records import EPOCH_LOG_SIZE
from ..store import LISTED_BACKENDS
from . import epoch_logs, hyper
from .reply import Caller, Reply
from .usage import store_usage

if TYPE_CHECKING:
    from .context import NodeContext

_TIME = struct.Struct("<q")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


def status_result(node: NodeContext) -> int:
    if node.status == ClusterStatus.OK:
        return Res.SUCCESS
    if node.status == ClusterStatus.WAIT:
        return Res.WAIT_FOR_JOIN if node.formatted else Res.WAIT_FOR_FORMAT
    if node.status == ClusterStatus.SHUTDOWN:
        return Res.SHUTDOWN
    return Res.SYSTEM_ERROR


def _flags(node: NodeContext) -> int:
    flags = node.config.flags
    if not node.formatted and node.auto_vnodes:
        flags |= ClusterFlag.AUTO_VNODES
    return flags


async def stat_cluster(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    nodes_nr = ClusterArgs.unpack(req.args).nodes_nr
    stride = EPOCH_LOG_SIZE + nodes_nr * SD_NODE_SIZE
    max_logs = req.data_length // stride if stride else 0
    out = bytearray()
    epoch = node.epoch if node.formatted else 0
    for i in range(max_logs):
        if epoch <= 0:
            break
        # A log we missed (we were down) is asked of the others, as C does.
        got = await epoch_logs.read_epoch(node, epoch) if nodes_nr else node.epochs.read(epoch)
        nodes, stamp = got if got else ([], 0)
        if len(nodes) > nodes_nr:
            return Reply(Res.BUFFER_SMALL)
        if not nodes_nr:
            nodes = []
        if i == 0:
            c = node.config
            log = EpochLog(c.ctime, stamp, epoch, nodes, int(c.disable_recovery), c.copies,
                           c.copy_policy, _flags(node), c.store)
        else:
            log = EpochLog(0, stamp, epoch, nodes)
        out += log.pack(nodes_slots=nodes_nr)
        epoch -= 1
    return Reply(status_result(node), data=out)


async def cluster_info(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    c = node.config
    body = ClusterInfo(epoch=node.epoch, ctime=c.ctime, flags=_flags(node), nr_copies=c.copies,
                       copy_policy=c.copy_policy, status=int(node.status),
                       block_size_shift=c.block_size_shift, store=c.store,
                       nodes=node.members,
                       disable_recovery=int(c.disable_recovery)).pack()
    return Reply(data=body[:req.data_length])


async def discard_obj(node: NodeContext, req: Request, data: memoryview | None,
                      caller: Caller) -> Reply:
    """Clear data_vdi_id[idx] in the VDI's inode, then free the object."""
    oid = ObjArgs.unpack(req.args).oid
    vid, idx = oid_to_vid(oid), data_oid_to_idx(oid)
    if node.table.is_snapshot(vid):
        return Reply(Res.READONLY)
    e = node.table.get(vid)
    copies = e.copies if e else 0
    if await hyper.store_policy(node.gateway, vid, copies) == hyper.HYPER_VOLUME:
        owner = await hyper.discard(node.gateway, vid, idx, copies)
        if owner:
            await node.vdi.free_unmapped(vid, idx, [owner], [0])
        return Reply()
    inode = vid_to_vdi_oid(vid)
    from ..proto import data_vid_offset

    cur = memoryview(bytearray(4))
    await node.gateway.read(inode, data_vid_offset(idx), cur, copies=copies)
    (owner,) = _U32.unpack(cur)
    if owner:
        await node.gateway.write(inode, data_vid_offset(idx), memoryview(bytes(4)),
                                 sync=True, copies=copies)
        # Frees the object when nobody else maps it (the VDI's own, or a
        # deleted parent's that this VDI was the last to share).
        await node.vdi.free_unmapped(vid, idx, [owner], [0])
    return Reply()


# ---- handlers, named by the op table (optable.py) ----

async def get_node_list(node: NodeContext, req: Request, data: memoryview | None,
                        caller: Caller) -> Reply:
    body = pack_nodes(node.members)
    n = min(len(node.members), req.data_length // SD_NODE_SIZE)
    return Reply(args=NodeResult(nr_nodes=len(node.members)).pack(),
                 data=body[:n * SD_NODE_SIZE])


async def stat_sheep(node: NodeContext, req: Request, data: memoryview | None,
                     caller: Caller) -> Reply:
    """The store's size and free bytes as C sheep counts them (usage.py):
    `dog node info`'s Used is what the objects take."""
    if node.opts.gateway:
        return Reply(args=NodeResult(0, 0, 0).pack())
    size, free = await trio.to_thread.run_sync(store_usage, node.store)
    return Reply(args=NodeResult(0, size, free).pack())


async def get_epoch(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    # tgt_epoch is 1 .. our epoch (wire_checks); its log may still be gone.
    got = node.epochs.read(ObjArgs.unpack(req.args).tgt_epoch)
    if got is None:
        return Reply(Res.NO_TAG)
    nodes, stamp = got
    body = pack_nodes(nodes)
    if len(body) + _TIME.size > req.data_length:
        return Reply(Res.BUFFER_SMALL)
    return Reply(data=body + _TIME.pack(stamp))


async def stat_recovery(node: NodeContext, req: Request, data: memoryview | None,
                        caller: Caller) -> Reply:
    return Reply(data=node.recovery.state().pack()[:req.data_length])


async def force_recover(node: NodeContext, req: Request, data: memoryview | None,
                        caller: Caller) -> Reply:
    """`dog cluster recover force`: run with the nodes that are here."""
    if node.status != ClusterStatus.WAIT or not node.formatted:
        return Reply(Res.FORCE_RECOVER)
    return Reply(await node.calls.force())


async def get_cluster_default(node: NodeContext, req: Request, data: memoryview | None,
                              caller: Caller) -> Reply:
    c = node.config
    return Reply(args=ClusterDefaultResult(c.copies, c.copy_policy,
                                           c.block_size_shift).pack())


# What `dog vdi list` reads is never older than a VDI another node has
# just reported created or deleted: each waits for `caught_up` first.

async def read_vdis(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    await node.calls.caught_up()
    return Reply(data=bytes(node.table.inuse.bits))  # data_length is its size (wire_checks)


async def read_del_vdis(node: NodeContext, req: Request, data: memoryview | None,
                        caller: Caller) -> Reply:
    await node.calls.caught_up()
    return Reply(data=bytes(node.table.deleted.bits))


async def get_vdi_copies(node: NodeContext, req: Request, data: memoryview | None,
                         caller: Caller) -> Reply:
    await node.calls.caught_up()
    body = b"".join(e.state().pack() for e in node.table.entries.values())
    if len(body) > req.data_length:
        return Reply(Res.BUFFER_SMALL)
    return Reply(data=body)


async def get_store_list(node: NodeContext, req: Request, data: memoryview | None,
                         caller: Caller) -> Reply:
    names = "".join(f"{k} " for k in LISTED_BACKENDS).encode()
    return Reply(data=names[:req.data_length])


async def flush_vdi(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    await node.gateway.flush(node.members or [node.me])
    return Reply()


async def exist(node: NodeContext, req: Request, data: memoryview | None, caller: Caller) -> Reply:
    ok = await node.peer.exists(ObjArgs.unpack(req.args).oid)
    return Reply(Res.SUCCESS if ok else Res.NO_OBJ)


async def kill_node(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    node.kill()
    return Reply()


async def stat(node: NodeContext, req: Request, data: memoryview | None,
               caller: Caller) -> Reply:
    """SD_OP_STAT (`dog node stat`): the request counters (stats.py)."""
    return Reply(data=node.stats.sd_stat().pack()[:req.data_length])


async def no_object_cache(node: NodeContext, req: Request, data: memoryview | None,
                          caller: Caller) -> Reply:
    """GET_CACHE_INFO, DELETE_CACHE, CACHE_PURGE (`dog vdi cache info|delete|
    purge`, Sheepdog 0.9's object cache): no sheep of ours keeps an object
    cache (writes are cached by the client and made durable by FLUSH_VDI),
    so there is nothing to show or drop: NO_SUPPORT, which dog says as
    "Operation is not supported"."""
    return Reply(Res.NO_SUPPORT)


async def get_loglevel(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    return Reply(data=_I32.pack(node.loglevel))


async def set_loglevel(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    assert data is not None  # a 4-byte level in 0..7 (wire_checks)
    node.set_loglevel(_I32.unpack(data)[0])
    return Reply()


async def get_vnodes(node: NodeContext, req: Request, data: memoryview | None,
                     caller: Caller) -> Reply:
    return Reply(data=_I32.pack(node.nr_vnodes))


async def set_vnodes(node: NodeContext, req: Request, data: memoryview | None,
                     caller: Caller) -> Reply:
    """`dog node vnodes set`: this node's new vnodes, announced to every
    node (a new epoch; recovery moves objects to the new ring). Only for
    a storing node of the fixed strategy: under auto, space decides."""
    assert data is not None  # an int32 in 1..65535 first (wire_checks)
    if node.opts.gateway:
        return Reply(Res.GATEWAY_MODE)
    if node.auto_vnodes:
        return Reply(Res.INVALID_VNODES_STRATEGY)
    node.update_node(nr_vnodes=_I32.unpack_from(data)[0])
    return Reply()


async def get_recovery(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    return Reply(data=node.recovery.throttle.pack()[:req.data_length])


async def set_recovery(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    assert data is not None  # a whole, consistent struct (wire_checks)
    t = RecoveryThrottle.unpack(data)
    node.recovery.set_throttle(t.max_exec_count, t.queue_work_interval)
    return Reply()


async def get_obj_list(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    if req.flags & Flag.CMD_WILDCARD:
        # Our extension for recovery: the stale copies, (oid, epoch) pairs.
        pairs = await trio.to_thread.run_sync(lambda: sorted(node.store.stale_copies()))
        body = b"".join(struct.pack("<QQ", o, e) for o, e in pairs)
    else:
        oids = sorted(node.store.oids())
        body = b"".join(struct.pack("<Q", o) for o in oids)
    if len(body) > req.data_length:
        return Reply(Res.BUFFER_SMALL)
    return Reply(data=body)


async def get_departed(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    """sheepblk's own: the nodes that left the cluster on a fault and why,
    as JSON [[node, why], ...] (oldest first)."""
    body = json.dumps(list(node.departed.items())).encode()
    if len(body) > req.data_length:
        return Reply(Res.BUFFER_SMALL)
    return Reply(data=body)
