"""Internal records other than headers: epoch log, recovery state, VDI
state, multi-disk info. Layouts from Sheepdog's include/internal_proto.h."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from .constants import SD_SHEEP_PROTO_VER, STORE_LEN
from .node import SD_NODE_SIZE, NodeId, SdNode, pack_nodes, unpack_nodes

_EPOCH_LOG = struct.Struct(f"<QQIIBBB3xH{STORE_LEN}s")
EPOCH_LOG_SIZE = _EPOCH_LOG.size
assert EPOCH_LOG_SIZE == 48


class EpochLog(NamedTuple):
    """One epoch: when it began and who was in the cluster."""

    ctime: int
    time: int
    epoch: int
    nodes: list[SdNode]
    disable_recovery: int = 0
    nr_copies: int = 0
    copy_policy: int = 0
    flags: int = 0
    drv_name: str = ""

    def pack(self, nodes_slots: int | None = None) -> bytes:
        """Header plus nodes; `nodes_slots` pads the node array to a fixed
        stride, as SD_OP_STAT_CLUSTER answers."""
        head = _EPOCH_LOG.pack(
            self.ctime, self.time, self.epoch, len(self.nodes),
            self.disable_recovery, self.nr_copies, self.copy_policy,
            self.flags, self.drv_name.encode(),
        )
        body = b"".join(n.pack() for n in self.nodes)
        if nodes_slots is not None:
            body = body[: nodes_slots * SD_NODE_SIZE].ljust(nodes_slots * SD_NODE_SIZE, b"\0")
        return head + body

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> EpochLog:
        f = _EPOCH_LOG.unpack_from(data, offset)
        ctime, tm, epoch, nr, dis, copies, policy, flags, drv = f
        nodes = unpack_nodes(memoryview(data)[offset + EPOCH_LOG_SIZE:], nr)
        return cls(ctime, tm, epoch, nodes, dis, copies, policy, flags,
                   drv.split(b"\0", 1)[0].decode())


# Up to default_store; 7 bytes of padding then align the nodes (sd_node
# holds 64-bit fields) to offset 48, as a C compiler lays them out.
_CLUSTER_INFO = struct.Struct(f"<BBhIQHBBBB3x{STORE_LEN}s7x")
CLUSTER_INFO_SIZE = _CLUSTER_INFO.size
assert CLUSTER_INFO_SIZE == 48


class ClusterInfo(NamedTuple):
    """struct cluster_info (include/internal_proto.h): SD_OP_CLUSTER_INFO's
    answer, the cluster's config and its members at `epoch`. Packed with
    only the members present, not nodes[SD_MAX_NODES]; the caller cuts it
    to the request's data_length."""

    epoch: int = 0
    ctime: int = 0
    flags: int = 0
    nr_copies: int = 0
    copy_policy: int = 0
    status: int = 0
    block_size_shift: int = 0
    store: str = ""
    nodes: Sequence[SdNode] = ()
    proto_ver: int = SD_SHEEP_PROTO_VER
    disable_recovery: int = 0

    def pack(self) -> bytes:
        head = _CLUSTER_INFO.pack(
            self.proto_ver, self.disable_recovery, len(self.nodes), self.epoch, self.ctime,
            self.flags, self.nr_copies, self.copy_policy, self.status,
            self.block_size_shift, self.store.encode(),
        )
        return head + pack_nodes(list(self.nodes))

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> ClusterInfo:
        """The nodes that `data` holds of the nr_nodes it announces (a
        reply cut to a short data_length holds fewer)."""
        ver, dis, nr, epoch, ctime, flags, copies, policy, status, shift, store = \
            _CLUSTER_INFO.unpack_from(data)
        room = max(0, len(data) - CLUSTER_INFO_SIZE) // SD_NODE_SIZE
        nodes = unpack_nodes(memoryview(data)[CLUSTER_INFO_SIZE:], max(0, min(nr, room)))
        return cls(epoch, ctime, flags, copies, policy, status, shift,
                   store.split(b"\0", 1)[0].decode(errors="replace"), nodes, ver, dis)


_RECOVERY_STATE = struct.Struct("<B3xI QQ")
RECOVERY_STATE_SIZE = _RECOVERY_STATE.size


class RecoveryState(NamedTuple):
    """struct recovery_state: what SD_OP_STAT_RECOVERY answers."""

    in_recovery: int = 0
    state: int = 0
    nr_finished: int = 0
    nr_total: int = 0

    def pack(self) -> bytes:
        return _RECOVERY_STATE.pack(*self)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> RecoveryState:
        return cls(*_RECOVERY_STATE.unpack_from(data))


_SD_STAT = struct.Struct("<15Q")
SD_STAT_SIZE = _SD_STAT.size


class SdStat(NamedTuple):
    """struct sd_stat: SD_OP_STAT's answer (`dog node stat`), a node's
    request counters since it started: the gateway's (clients' object I/O
    and flushes) and the peer's (other sheep's)."""

    gway_active_nr: int = 0
    peer_active_nr: int = 0
    gway_total_nr: int = 0
    peer_total_nr: int = 0
    gway_total_rx: int = 0
    gway_total_tx: int = 0
    peer_total_rx: int = 0
    peer_total_tx: int = 0
    gway_total_remove_nr: int = 0
    gway_total_read_nr: int = 0
    gway_total_write_nr: int = 0
    gway_total_flush_nr: int = 0
    peer_total_remove_nr: int = 0
    peer_total_read_nr: int = 0
    peer_total_write_nr: int = 0

    def pack(self) -> bytes:
        return _SD_STAT.pack(*self)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> SdStat:
        return cls(*_SD_STAT.unpack_from(data))


_RECOVERY_THROTTLE = struct.Struct("<I4xQ?7x")
RECOVERY_THROTTLE_SIZE = _RECOVERY_THROTTLE.size


class RecoveryThrottle(NamedTuple):
    """struct recovery_throttling: SD_OP_GET_RECOVERY's answer and
    SD_OP_SET_RECOVERY's payload (`dog node recovery set-throttle MAX
    INTERVAL`): at most `max_exec_count` objects started every
    `queue_work_interval` milliseconds; both 0 means no throttling."""

    max_exec_count: int = 0
    queue_work_interval: int = 0
    throttling: bool = False

    def pack(self) -> bytes:
        return _RECOVERY_THROTTLE.pack(*self)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> RecoveryThrottle:
        m, i, t = _RECOVERY_THROTTLE.unpack_from(bytes(data).ljust(RECOVERY_THROTTLE_SIZE, b"\0"))
        return cls(m, i, t)


SD_MAX_COPIES_STATE = 31
_VDI_STATE = struct.Struct("<IBBBBB3xII")
VDI_STATE_SIZE = _VDI_STATE.size + 40 + 4 + 4 * SD_MAX_COPIES_STATE + 40 * SD_MAX_COPIES_STATE


class VdiState(NamedTuple):
    """struct vdi_state: per-VDI copies, snapshot flag and lock owner."""

    vid: int
    nr_copies: int = 0
    snapshot: int = 0
    deleted: int = 0
    copy_policy: int = 0
    block_size_shift: int = 22
    parent_vid: int = 0
    lock_state: int = 1
    lock_owner: NodeId = NodeId("0.0.0.0", 0)

    def pack(self) -> bytes:
        head = _VDI_STATE.pack(
            self.vid, self.nr_copies, self.snapshot, self.deleted,
            self.copy_policy, self.block_size_shift, self.parent_vid,
            self.lock_state,
        )
        return (head + self.lock_owner.pack()).ljust(VDI_STATE_SIZE, b"\0")

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> VdiState:
        f = _VDI_STATE.unpack_from(data, offset)
        owner = NodeId.unpack(data, offset + _VDI_STATE.size)
        return cls(*f, lock_owner=owner)  # type: ignore[misc]
