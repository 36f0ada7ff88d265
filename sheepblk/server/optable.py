"""Every opcode a sheep serves, what kind it is and which handlers serve it.

Mirrors sheep/ops.c's sd_op_template table: *gateway* ops find an
object's owners (gateway_ops), *peer* ops serve this node's copy
(peer_ops), *local* ops answer from this node's state (local_ops,
md_ops), *cluster* ops go through the ordered stream (cluster_ops):
`work` runs on the asking node while every node holds the stream (a
block), `main` on every node in stream order. `process` is where
`NodeContext.handle` sends the request; for a cluster op it submits it to the
stream. `force` ops are served before the cluster is formatted or while
it waits for nodes. Finding where an opcode is handled takes one look
here; who may send it (any host, or only hosts that may administer the
cluster) is admission.py's ADMIN_OPS / OPEN_OPS.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..proto import Op, Request
from . import cluster_ops as c
from . import gateway_ops as g
from . import local_ops as lo
from . import md_ops as md
from . import peer_ops as p
from . import repair as rp
from .reply import Caller, Reply

if TYPE_CHECKING:
    from .context import NodeContext
    from .messages import ClusterMsg


class Kind(enum.Enum):
    GATEWAY = "gateway"
    PEER = "peer"
    LOCAL = "local"
    CLUSTER = "cluster"


Process = Callable[["NodeContext", Request, "memoryview | None", Caller], Awaitable[Reply]]
Work = Callable[["NodeContext", Request, memoryview, str], Awaitable[tuple[Reply, dict[str, Any]]]]
Main = Callable[["NodeContext", Request, "ClusterMsg"], Awaitable[int]]


class OpInfo(NamedTuple):
    kind: Kind
    process: Process
    force: bool = False
    work: Work | None = None  # cluster op: its block half on the asking node
    main: Main | None = None  # cluster op: its half on every node


G, P, L, C = Kind.GATEWAY, Kind.PEER, Kind.LOCAL, Kind.CLUSTER

OPS: dict[int, OpInfo] = {
    # gateway
    Op.CREATE_AND_WRITE_OBJ: OpInfo(G, g.create_and_write_obj),
    Op.READ_OBJ: OpInfo(G, g.read_obj),
    Op.WRITE_OBJ: OpInfo(G, g.write_obj),
    Op.REMOVE_OBJ: OpInfo(G, g.remove_obj),
    # peer
    Op.CREATE_AND_WRITE_PEER: OpInfo(P, p.create_and_write_peer),
    Op.READ_PEER: OpInfo(P, p.read_peer),
    Op.WRITE_PEER: OpInfo(P, p.write_peer),
    Op.REMOVE_PEER: OpInfo(P, p.remove_peer),
    Op.FLUSH_PEER: OpInfo(P, p.flush_peer),
    # cluster
    Op.NEW_VDI: OpInfo(C, c.through_stream, work=c.new_vdi_work, main=c.new_vdi_main),
    Op.DEL_VDI: OpInfo(C, c.through_stream, work=c.del_vdi_work, main=c.del_vdi_main),
    Op.LOCK_VDI: OpInfo(C, c.lock_op, work=c.find_vdi_work, main=c.lock_vdi_main),
    Op.RELEASE_VDI: OpInfo(C, c.lock_op, main=c.release_vdi_main),
    Op.GET_VDI_INFO: OpInfo(C, c.get_vdi_info, work=c.find_vdi_work),
    Op.GET_VDI_ATTR: OpInfo(C, c.through_stream, work=c.get_vdi_attr_work),
    Op.MAKE_FS: OpInfo(C, c.through_stream, force=True, main=c.make_fs_main),
    Op.SHUTDOWN: OpInfo(C, c.through_stream, force=True, main=c.shutdown_main),
    Op.ENABLE_RECOVER: OpInfo(C, c.through_stream, main=c.enable_recover_main),
    Op.DISABLE_RECOVER: OpInfo(C, c.through_stream, main=c.disable_recover_main),
    Op.ALTER_CLUSTER_COPY: OpInfo(C, c.through_stream, main=c.alter_cluster_copy_main),
    Op.ALTER_VDI_COPY: OpInfo(C, c.through_stream, main=c.alter_vdi_copy_main),
    Op.REWEIGHT: OpInfo(C, c.through_stream, main=c.reweight_main),
    Op.NOTIFY_VDI_ADD: OpInfo(C, c.through_stream, work=c.notify_vdi_add_work,
                              main=c.notify_vdi_add_main),
    # local
    Op.DISCARD_OBJ: OpInfo(L, lo.discard_obj),
    Op.FLUSH_VDI: OpInfo(L, lo.flush_vdi),
    Op.EXIST: OpInfo(L, lo.exist, force=True),
    Op.READ_VDIS: OpInfo(L, lo.read_vdis, force=True),
    Op.READ_DEL_VDIS: OpInfo(L, lo.read_del_vdis, force=True),
    Op.GET_VDI_COPIES: OpInfo(L, lo.get_vdi_copies, force=True),
    Op.GET_NODE_LIST: OpInfo(L, lo.get_node_list, force=True),
    Op.GET_CLUSTER_DEFAULT: OpInfo(L, lo.get_cluster_default, force=True),
    Op.STAT_SHEEP: OpInfo(L, lo.stat_sheep),
    Op.STAT_CLUSTER: OpInfo(L, lo.stat_cluster, force=True),
    Op.STAT_RECOVERY: OpInfo(L, lo.stat_recovery, force=True),
    Op.GET_EPOCH: OpInfo(L, lo.get_epoch),
    Op.GET_STORE_LIST: OpInfo(L, lo.get_store_list, force=True),
    Op.CLUSTER_INFO: OpInfo(L, lo.cluster_info, force=True),
    Op.KILL_NODE: OpInfo(L, lo.kill_node, force=True),
    Op.STAT: OpInfo(L, lo.stat, force=True),
    Op.GET_CACHE_INFO: OpInfo(L, lo.no_object_cache, force=True),
    Op.DELETE_CACHE: OpInfo(L, lo.no_object_cache, force=True),
    Op.CACHE_PURGE: OpInfo(L, lo.no_object_cache, force=True),
    Op.GET_LOGLEVEL: OpInfo(L, lo.get_loglevel, force=True),
    Op.SET_LOGLEVEL: OpInfo(L, lo.set_loglevel, force=True),
    Op.GET_VNODES: OpInfo(L, lo.get_vnodes, force=True),
    Op.SET_VNODES: OpInfo(L, lo.set_vnodes, force=True),
    Op.GET_RECOVERY: OpInfo(L, lo.get_recovery, force=True),
    Op.SET_RECOVERY: OpInfo(L, lo.set_recovery, force=True),
    Op.FORCE_RECOVER: OpInfo(L, lo.force_recover, force=True),
    Op.GET_OBJ_LIST: OpInfo(L, lo.get_obj_list),
    Op.GET_HASH: OpInfo(L, rp.get_hash),
    Op.MD_INFO: OpInfo(L, md.md_info, force=True),
    Op.MD_PLUG: OpInfo(L, md.md_plug, force=True),
    Op.MD_UNPLUG: OpInfo(L, md.md_unplug, force=True),
    Op.REPAIR_REPLICA: OpInfo(L, rp.repair_replica),
    Op.GET_DEPARTED: OpInfo(L, lo.get_departed, force=True),
}
