"""Cluster ops: VDI and cluster changes every node applies in the same
order (sheep/ops.c's process_work and process_main halves).

An op goes through the driver's ordered stream (`NodeContext.cluster_op`). A
*block* op's work half runs on the asking node alone, while every node
holds back the stream; its result and what it found (`extra`) reach every
node in the notify that follows, where each runs the main half. A
*notify* op has only a main half. A main half changes only this node's
state, the same way on every node: one that cannot apply it fails stop
(`NodeContext.fail_stop`). The op table (optable.py) names the halves.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from ..proto import (
    ClusterArgs,
    ClusterStatus,
    Flag,
    InodeHeader,
    Op,
    Request,
    Res,
    VdiArgs,
    VdiResult,
    VdiStateArgs,
    ec,
    vid_to_vdi_oid,
)
from ..proto.constants import (
    SD_DEFAULT_BLOCK_SIZE_SHIFT,
    SD_DEFAULT_COPIES,
    SD_MAX_COPIES,
    ClusterFlag,
)
from ..proto.inode import SD_INODE_HEADER_SIZE
from ..store import BACKENDS, NodeConfig, StoreError, save_node_space
from . import md_ops
from .gateway import GatewayError
from .lock_lease import Release
from .messages import ClusterMsg
from .peer_client import PeerError
from .reply import Caller, Reply
from .usage import store_usage
from .vdi_ops import VdiError, inode_names, parse_name
from .vdi_table import VdiEntry
from .wire_text import shown

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep")

Extra = dict[str, Any]


# ---- submitting (the asking node) ----

async def through_stream(node: NodeContext, req: Request, data: memoryview | None,
                         caller: Caller) -> Reply:
    return await node.calls.cluster_op(req, data, caller)


async def get_vdi_info(node: NodeContext, req: Request, data: memoryview | None,
                       caller: Caller) -> Reply:
    """A read-only lookup with nothing ordered ahead of it is answered here,
    after a barrier, instead of blocking every node for the block / notify
    pair Sheepdog sends."""
    if not node.stream_idle():
        return await node.calls.cluster_op(req, data, caller)
    await node.calls.caught_up()
    reply, _ = await find_vdi_work(node, req, data if data is not None else memoryview(b""),
                                   caller.key)
    return reply


async def lock_op(node: NodeContext, req: Request, data: memoryview | None, caller: Caller) -> Reply:
    """LOCK_VDI / RELEASE_VDI through the stream, then the lock session
    bookkeeping of this node (see lock_lease.py)."""
    caller.holds_locks = True
    reply = await node.calls.cluster_op(req, data, caller)
    if reply.result == Res.SUCCESS:
        v = VdiArgs.unpack(req.args)
        if req.opcode == Op.LOCK_VDI:
            node.leases.locked(caller.key, VdiResult.unpack(reply.args).vdi_id, v.type)
        else:
            node.leases.released(caller.key, v.base_vdi_id, v.type)
    return reply


# ---- work halves (the asking node, the stream held) ----

async def new_vdi_work(node: NodeContext, req: Request, data: memoryview,
                       owner: str) -> tuple[Reply, Extra]:
    v = VdiArgs.unpack(req.args)
    name, _ = parse_name(data, with_tag=False)
    copies, policy = v.copies, v.copy_policy
    if not copies:
        copies = node.config.copies or SD_DEFAULT_COPIES
        policy = node.config.copy_policy
    shift = v.block_size_shift or node.config.block_size_shift
    if policy and not v.snapid and not v.base_vdi_id:
        # A new erasure-coded VDI needs a zone for each strip (dog checks
        # too; another client may not).
        strips = sum(ec.policy_dp(policy))
        zones = node.view.current_ring().nr_zones
        if zones < strips:
            raise VdiError(Res.INVALID_PARMS,
                           f"erasure code of {strips} strips on {zones} zones")
    out = await node.vdi.create(name, v.vdi_size, base_vid=v.base_vdi_id,
                                snapshot=bool(v.snapid), copies=copies,
                                copy_policy=policy, store_policy=v.store_policy,
                                block_size_shift=shift)
    args = VdiResult(vdi_id=out.vid, copies=copies, block_size_shift=shift).pack()
    return Reply(args=args), {"vid": out.vid, "copies": copies, "policy": policy,
                              "shift": shift, "old_vid": out.old_vid,
                              "parent": out.parent, "snapshot": bool(v.snapid),
                              "name": out.name.hex(), "snap_id": out.snap_id,
                              "ctime": out.create_time, "old_tag": out.old_tag.hex()}


async def find_vdi_work(node: NodeContext, req: Request, data: memoryview,
                        owner: str) -> tuple[Reply, Extra]:
    """GET_VDI_INFO and LOCK_VDI: which VDI the name (and tag or snapshot
    id) means."""
    v = VdiArgs.unpack(req.args)
    name, tag = parse_name(data)
    vid = await node.vdi.find(name, tag, v.snapid)
    e = node.table.get(vid)
    args = VdiResult(vdi_id=vid, copies=e.copies if e else 0,
                     block_size_shift=e.block_size_shift if e else 22).pack()
    return Reply(args=args), {"vid": vid}


async def del_vdi_work(node: NodeContext, req: Request, data: memoryview,
                       owner: str) -> tuple[Reply, Extra]:
    v = VdiArgs.unpack(req.args)
    name, tag = parse_name(data)
    out = await node.vdi.delete(name, tag, v.snapid)
    return Reply(args=VdiResult(vdi_id=out.vid).pack()), {"vid": out.vid}


async def get_vdi_attr_work(node: NodeContext, req: Request, data: memoryview,
                            owner: str) -> tuple[Reply, Extra]:
    v = VdiArgs.unpack(req.args)
    out = await node.vdi.attr(data, v.snapid, create=bool(req.flags & Flag.CMD_WILDCARD),
                              excl=bool(req.flags & Flag.CMD_EXCL),
                              delete=bool(req.flags & Flag.CMD_DEL))
    args = VdiResult(vdi_id=out.vid, attr_id=out.attr_id, copies=out.copies).pack()
    return Reply(args=args), {}


async def notify_vdi_add_work(node: NodeContext, req: Request, data: memoryview,
                              owner: str) -> tuple[Reply, Extra]:
    """The registered VDI's naming facts from its inode, for every node's
    name index. Sheepdog's dog sends the notify before it writes the
    inode: then nothing is carried and the entry stays unnamed (lookups
    read its inode)."""
    s = VdiStateArgs.unpack(req.args)
    buf = memoryview(bytearray(SD_INODE_HEADER_SIZE))
    try:
        await node.gateway.read(vid_to_vdi_oid(s.new_vid), 0, buf, copies=s.copies)
    except (GatewayError, StoreError, PeerError) as e:
        log.debug("NOTIFY_VDI_ADD %x: inode not readable yet: %s", s.new_vid, e)
        return Reply(), {}
    h = InodeHeader.unpack(buf)
    name, tag = inode_names(buf)
    if h.vdi_id != s.new_vid or not name:
        return Reply(), {}
    return Reply(), {"names": [name.hex(), tag.hex(), h.snap_id, h.create_time,
                               h.parent_vdi_id]}


# ---- main halves (every node, in stream order) ----

async def new_vdi_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    x = msg.extra
    node.table.add(VdiEntry(x["vid"], x["copies"], x["policy"], x["shift"],
                            parent=x["parent"], name=bytes.fromhex(x.get("name", "")),
                            snap_id=x.get("snap_id", 0), create_time=x.get("ctime", 0),
                            named="name" in x))
    if x.get("old_vid") and x.get("snapshot"):
        tag = x.get("old_tag")
        node.table.mark_snapshot(x["old_vid"], bytes.fromhex(tag) if tag is not None else None)
        node.table.move_lock(x["old_vid"], x["vid"])
        node.leases.moved(x["old_vid"], x["vid"])
    return Res.SUCCESS


async def del_vdi_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    vid = msg.extra["vid"]
    node.table.mark_deleted(vid)
    if node.config.flags & ClusterFlag.RECYCLE_VID:
        await _recycle_family(node, vid)
    return Res.SUCCESS


async def _recycle_family(node: NodeContext, vid: int) -> None:
    """VID recycling: once every member of a family (a root VDI, its
    snapshots and clones) is deleted, its ids are free again and each node
    drops its copies of their inodes, as Sheepdog's vid GC does."""
    members = node.table.family_members(vid)
    entries = [node.table.get(v) for v in members]
    if not all(e is not None and e.deleted for e in entries):
        return
    for v in members:
        node.table.forget(v)
    oids = {vid_to_vdi_oid(v) for v in members}

    def drop() -> None:
        for oid in oids:
            try:
                node.store.remove(oid)
            except StoreError:
                pass
        for oid, ep in list(node.store.stale_copies()):
            if oid in oids:
                node.store.remove_stale(oid, ep)

    await trio.to_thread.run_sync(drop)
    log.info("VID recycling: family of %x deleted, ids %s free again", vid,
             ",".join(f"{v:x}" for v in members))


async def lock_vdi_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    kind = VdiArgs.unpack(req.args).type
    ok = node.table.lock(msg.extra["vid"], msg.owner, kind)
    return Res.SUCCESS if ok else Res.VDI_LOCKED


async def release_vdi_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    x = msg.extra
    if x.get("owner_gone"):
        node.table.release_owner(msg.owner, x.get("vid"))
    else:
        v = VdiArgs.unpack(req.args)
        node.table.unlock(v.base_vdi_id, msg.owner, v.type)
    return Res.SUCCESS


async def make_fs_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    c = ClusterArgs.unpack(req.args)
    store_name = msg.data.split(b"\0", 1)[0].decode(errors="replace") or "plain"
    if store_name != node.store.name:
        # A multi-disk store switches every disk's backend (plain <-> farm).
        if not node.store.can_reopen or store_name not in BACKENDS:
            return Res.NO_STORE
        await node.recovery.stop_and_wait()
        await trio.to_thread.run_sync(node.store.reopen, store_name)
    await node.recovery.stop_and_wait()
    await trio.to_thread.run_sync(node.store.format)
    # The flags as dog sent them, the vnodes strategy included: dog
    # checked that every sheep was started for it (C sheep takes them too).
    node.adopt_format(NodeConfig(ctime=c.ctime or int(time.time()) << 32,
                                 copies=c.copies or SD_DEFAULT_COPIES,
                                 copy_policy=c.copy_policy, flags=c.flags,
                                 block_size_shift=c.block_size_shift
                                 or SD_DEFAULT_BLOCK_SIZE_SHIFT,
                                 store=store_name))
    log.info("formatted: %d copies, store %s", node.config.copies, shown(store_name))
    return Res.SUCCESS


async def notify_vdi_add_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    res = md_ops.notify_vdi_add(node.table, req)
    if res == Res.SUCCESS and msg.extra.get("names"):
        name, tag, snap_id, ctime, parent = msg.extra["names"]
        vid = VdiStateArgs.unpack(req.args).new_vid
        node.table.set_names(vid, bytes.fromhex(name), bytes.fromhex(tag), snap_id, ctime,
                             parent=parent)
    return res


async def enable_recover_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    node.set_auto_recovery(True)
    log.info("automatic recovery enabled")
    return Res.SUCCESS


async def disable_recover_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    """From now on a recovery pulls only the objects clients ask for
    until recovery is enabled again (Sheepdog's suspended recovery)."""
    node.set_auto_recovery(False)
    log.info("automatic recovery disabled")
    return Res.SUCCESS


async def alter_cluster_copy_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    """`dog cluster alter-copy`: the default copies of new VDIs. Erasure
    coding cannot be changed (Sheepdog refuses it too)."""
    c = ClusterArgs.unpack(req.args)
    if c.copy_policy or not 1 <= c.copies <= SD_MAX_COPIES:
        return Res.INVALID_PARMS
    node.set_cluster_copies(c.copies)
    log.info("the cluster's copies are %d now", c.copies)
    return Res.SUCCESS


async def alter_vdi_copy_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    """`dog vdi alter-copy` (dog has rewritten the inode already): the
    VDI's objects get the new number of copies, and a recovery at the
    same epoch moves them (as Sheepdog's cluster_alter_vdi_copy)."""
    s = VdiStateArgs.unpack(req.args)
    if s.copy_policy or not 1 <= s.copies <= SD_MAX_COPIES:
        return Res.INVALID_PARMS
    if not node.table.set_copies(s.new_vid, s.copies):
        return Res.NO_VDI
    log.info("VDI %x has %d copies now", s.new_vid, s.copies)
    node.placement_changed()
    return Res.SUCCESS


async def shutdown_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    node.shut_down()
    return Res.SUCCESS


# A node's space must change by this share before a reweight announces it
# (Sheepdog's node_size_varied): small drifts, a log growing, move nothing.
REWEIGHT_MIN_CHANGE = 0.01


async def reweight_main(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
    """`dog cluster reweight`, on every node: measure the space again
    (usage.py) and, when it changed enough, keep and announce it, which
    makes an epoch (under the auto strategy, with new vnodes)."""
    if node.opts.gateway:
        return Res.SUCCESS
    new, _free = await trio.to_thread.run_sync(store_usage, node.store)
    old = node.space
    if old and abs(new - old) / old < REWEIGHT_MIN_CHANGE:
        return Res.SUCCESS
    if not old and not new:
        return Res.SUCCESS
    log.info("reweight: space %d -> %d bytes", old, new)
    save_node_space(node.root, new)
    node.update_node(space=new)
    return Res.SUCCESS


# ---- lock sessions whose clients are gone ----

async def release_sessions(node: NodeContext, releases: list[Release]) -> None:
    """Release, cluster-wide, locks whose session has no member left;
    owner-specific, so a lock re-taken by someone else meanwhile stays."""
    if not releases or node.status != ClusterStatus.OK or node.stopped.is_set():
        return
    for r in releases:
        req = Request(Op.RELEASE_VDI, 0, 0, 0, 0, VdiArgs(base_vdi_id=r.vid, type=r.kind).pack())
        try:
            await node.calls.cluster_op(req, None, Caller(r.owner),
                                        extra={"owner_gone": True, "vid": r.vid})
            log.info("released lock of %x: its client %s is gone", r.vid, r.owner)
        except Exception:
            if node.stopped.is_set():
                # Stopping meanwhile (its cluster driver may be closed): the
                # lock goes with this node's leaving, as its other locks do.
                log.info("lock of %x held by %s not released: this node is stopping",
                         r.vid, r.owner)
                return
            log.exception("releasing the lock of %x held by %s failed", r.vid, r.owner)
