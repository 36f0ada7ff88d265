"""Which opcodes exist, who serves them and whether they run before format.

Mirrors sheep/ops.c's table: *gateway* ops find an object's owners, *peer*
ops serve this node's copy, *local* ops answer from this node's state,
*cluster* ops go through the ordered stream (`work` on the asking node,
`main` on every node). `force` ops are served before the cluster is
formatted or while it waits for nodes.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ..proto import Op


class Kind(enum.Enum):
    GATEWAY = "gateway"
    PEER = "peer"
    LOCAL = "local"
    CLUSTER = "cluster"


class OpInfo(NamedTuple):
    kind: Kind
    force: bool = False
    work: bool = False  # cluster op with a work half (block + notify)
    main: bool = False  # cluster op with a main half


G, P, L, C = Kind.GATEWAY, Kind.PEER, Kind.LOCAL, Kind.CLUSTER

OPS: dict[int, OpInfo] = {
    Op.CREATE_AND_WRITE_OBJ: OpInfo(G),
    Op.READ_OBJ: OpInfo(G),
    Op.WRITE_OBJ: OpInfo(G),
    Op.REMOVE_OBJ: OpInfo(G),
    Op.DISCARD_OBJ: OpInfo(L),
    Op.FLUSH_VDI: OpInfo(L),
    Op.CREATE_AND_WRITE_PEER: OpInfo(P),
    Op.READ_PEER: OpInfo(P),
    Op.WRITE_PEER: OpInfo(P),
    Op.REMOVE_PEER: OpInfo(P),
    Op.FLUSH_PEER: OpInfo(P),
    Op.EXIST: OpInfo(L, force=True),
    Op.NEW_VDI: OpInfo(C, work=True, main=True),
    Op.DEL_VDI: OpInfo(C, work=True, main=True),
    Op.LOCK_VDI: OpInfo(C, work=True, main=True),
    Op.RELEASE_VDI: OpInfo(C, main=True),
    Op.GET_VDI_INFO: OpInfo(C, work=True),
    Op.GET_VDI_ATTR: OpInfo(C, work=True),
    Op.MAKE_FS: OpInfo(C, force=True, main=True),
    Op.SHUTDOWN: OpInfo(C, force=True, main=True),
    Op.READ_VDIS: OpInfo(L, force=True),
    Op.READ_DEL_VDIS: OpInfo(L, force=True),
    Op.GET_VDI_COPIES: OpInfo(L, force=True),
    Op.GET_NODE_LIST: OpInfo(L, force=True),
    Op.GET_CLUSTER_DEFAULT: OpInfo(L, force=True),
    Op.STAT_SHEEP: OpInfo(L),
    Op.STAT_CLUSTER: OpInfo(L, force=True),
    Op.STAT_RECOVERY: OpInfo(L),
    Op.GET_EPOCH: OpInfo(L),
    Op.GET_STORE_LIST: OpInfo(L, force=True),
    Op.CLUSTER_INFO: OpInfo(L, force=True),
    Op.KILL_NODE: OpInfo(L, force=True),
    Op.GET_LOGLEVEL: OpInfo(L, force=True),
    Op.SET_LOGLEVEL: OpInfo(L, force=True),
    Op.GET_VNODES: OpInfo(L, force=True),
    Op.GET_RECOVERY: OpInfo(L, force=True),
    Op.SET_RECOVERY: OpInfo(L, force=True),
    Op.GET_OBJ_LIST: OpInfo(L),
    Op.GET_HASH: OpInfo(L),
    Op.MD_INFO: OpInfo(L, force=True),
    Op.MD_PLUG: OpInfo(L, force=True),
    Op.MD_UNPLUG: OpInfo(L, force=True),
    Op.NOTIFY_VDI_ADD: OpInfo(C, work=True, main=True),  # work: read its names
    Op.REPAIR_REPLICA: OpInfo(L),
}
