"""Typed calls for every cluster operation a frontend or `dog` needs.

Each method builds one request, sends it through the pool and decodes the
answer into a record from sheepblk.proto; result codes other than SUCCESS
raise SheepdogError with Sheepdog's message.
"""

from __future__ import annotations

import json
import struct
import time
from typing import NamedTuple

from ..proto import (
    MAX_DATA_LENGTH,
    SD_INODE_HEADER_SIZE,
    SD_NODE_SIZE,
    SD_NR_VDIS,
    SD_PROTO_VER,
    SD_SHEEP_PROTO_VER,
    ClusterArgs,
    ClusterDefaultResult,
    EpochLog,
    Flag,
    InodeHeader,
    NodeResult,
    ObjArgs,
    Op,
    RecoveryState,
    Request,
    Res,
    Response,
    SdNode,
    VdiArgs,
    VdiResult,
    bitmap_ids,
    bitmap_test,
    data_vid_offset,
    unpack_nodes,
    vid_to_vdi_oid,
)
from ..proto.constants import SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN, ClusterFlag
from ..proto.records import CLUSTER_INFO_SIZE, EPOCH_LOG_SIZE, RECOVERY_STATE_SIZE, ClusterInfo
from .connection import Buffer, Connection
from .errors import SheepdogError
from .hyper import HYPER_VOLUME, HyperTree, Index
from .pool import ConnectionPool, Pool

# First guess of node slots per epoch and of epochs for STAT_CLUSTER; as
# dog does, we ask again with twice as many node slots when the answer is
# BUFFER_SMALL, and with twice as many epochs while the answer fills every
# slot and has not reached epoch 1 (a long-lived cluster has many epochs).
STAT_CLUSTER_NODES = 64
STAT_CLUSTER_EPOCHS = 64
# Room for GET_DEPARTED's answer (16 nodes with a reason of up to 1 KiB).
DEPARTED_BYTES = 1 << 16
# Room for GET_STORE_LIST's answer (dog's list_store asks for 512 bytes).
STORE_LIST_LEN = 512


def _proto_for(opcode: int) -> int:
    return SD_SHEEP_PROTO_VER if opcode >= 0x80 else SD_PROTO_VER


def _name_payload(name: str, tag: str = "") -> bytes:
    raw_name = name.encode()
    raw_tag = tag.encode()
    if not raw_name or len(raw_name) >= SD_MAX_VDI_LEN or b"\0" in raw_name:
        raise ValueError(f"bad VDI name {name!r}: 1 to {SD_MAX_VDI_LEN - 1} bytes, no NUL")
    if len(raw_tag) >= SD_MAX_VDI_TAG_LEN:
        raise ValueError(f"bad snapshot tag {tag!r}: at most {SD_MAX_VDI_TAG_LEN - 1} bytes")
    return raw_name.ljust(SD_MAX_VDI_LEN, b"\0") + raw_tag.ljust(SD_MAX_VDI_TAG_LEN, b"\0")


class VdiInfo(NamedTuple):
    vid: int
    copies: int
    block_size_shift: int


class SheepClient:
    """Cluster operations over a ConnectionPool (one gateway node)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7000,
                 pool: Pool | None = None, pool_size: int = 8) -> None:
        self.pool: Pool = pool or ConnectionPool(host, port, pool_size)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> SheepClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- raw ----

    def request(self, opcode: int, args: bytes = bytes(32), *, flags: int = 0,
                data: Buffer | None = None, data_length: int | None = None,
                rbuf: Buffer | None = None, check: bool = True,
                context: str = "", epoch: int = 0,
                conn: Connection | None = None) -> tuple[Response, memoryview]:
        """One request through the pool, or through `conn` when given (a
        connection the caller keeps apart, e.g. the one holding a lock)."""
        if data_length is None:
            data_length = len(memoryview(data)) if data is not None else 0
        if data is not None:
            flags |= Flag.CMD_WRITE
        req = Request(opcode, flags, epoch, 0, data_length, args, _proto_for(opcode))
        if conn is not None:
            return conn.execute(req, data, rbuf=rbuf, check=check, context=context)
        pooled = self.pool.get()
        try:
            return pooled.execute(req, data, rbuf=rbuf, check=check, context=context)
        finally:
            self.pool.put(pooled)

    # ---- objects ----

    def read_obj(self, oid: int, length: int, offset: int = 0, *,
                 rbuf: Buffer | None = None, flags: int = 0) -> memoryview:
        _, out = self.request(Op.READ_OBJ, ObjArgs(oid=oid, offset=offset).pack(),
                              flags=flags, data_length=length, rbuf=rbuf)
        return out

    def write_obj(self, oid: int, data: Buffer, offset: int = 0, *, flags: int = 0) -> None:
        try:
            self.request(Op.WRITE_OBJ, ObjArgs(oid=oid, offset=offset).pack(),
                         flags=flags, data=data)
        except SheepdogError as e:
            e.oid = oid
            raise

    def create_and_write_obj(self, oid: int, data: Buffer, offset: int = 0, *,
                             cow_oid: int = 0, copies: int = 0, flags: int = 0,
                             copy_policy: int = 0) -> None:
        if cow_oid:
            flags |= Flag.CMD_COW
        try:
            self.request(Op.CREATE_AND_WRITE_OBJ,
                         ObjArgs(oid=oid, cow_oid=cow_oid, copies=copies,
                                 copy_policy=copy_policy, offset=offset).pack(),
                         flags=flags, data=data)
        except SheepdogError as e:
            e.oid = oid
            raise

    def remove_obj(self, oid: int) -> None:
        self.request(Op.REMOVE_OBJ, ObjArgs(oid=oid).pack())

    def discard_obj(self, oid: int) -> None:
        """Clear the data object's index entry in its inode and free it."""
        self.request(Op.DISCARD_OBJ, ObjArgs(oid=oid).pack())

    # ---- VDIs ----

    def lookup_vdi(self, name: str, tag: str = "", snapid: int = 0) -> VdiInfo:
        """The VDI id of `name` (its working VDI, or the snapshot by tag or id)."""
        rsp, _ = self.request(Op.GET_VDI_INFO, VdiArgs(snapid=snapid).pack(),
                              data=_name_payload(name, tag), context=name)
        r = VdiResult.unpack(rsp.args)
        return VdiInfo(r.vdi_id, r.copies, r.block_size_shift)

    def create_vdi(self, name: str, size: int, *, copies: int = 0, copy_policy: int = 0,
                   block_size_shift: int = 0, base_vid: int = 0, snapshot: bool = False,
                   store_policy: int = 0, tag: str = "") -> int:
        """Create a VDI (or, with `snapshot`, snapshot the one named) and
        return its new vid. Copies and block size 0 mean the cluster default."""
        args = VdiArgs(vdi_size=size, base_vdi_id=base_vid, copies=copies,
                       copy_policy=copy_policy, store_policy=store_policy,
                       block_size_shift=block_size_shift, snapid=1 if snapshot else 0)
        # As dog and QEMU do: the name alone; a snapshot's tag is written
        # into the inode by the caller before the snapshot is taken.
        rsp, _ = self.request(Op.NEW_VDI, args.pack(),
                              data=_name_payload(name, tag)[:SD_MAX_VDI_LEN], context=name)
        return VdiResult.unpack(rsp.args).vdi_id

    def delete_vdi(self, name: str, tag: str = "", snapid: int = 0) -> None:
        self.request(Op.DEL_VDI, VdiArgs(snapid=snapid).pack(),
                     data=_name_payload(name, tag), context=name)

    def lock_vdi(self, name: str, tag: str = "", snapid: int = 0, shared: bool = False, *,
                 conn: Connection | None = None) -> int:
        """Lock for writing (or shared); returns the vid. Released by
        release_vdi or when the connection that took it closes, so a holder
        that must keep it passes a `conn` of its own, not a pooled one."""
        rsp, _ = self.request(Op.LOCK_VDI, VdiArgs(snapid=snapid, type=1 if shared else 0).pack(),
                              data=_name_payload(name, tag), context=name, conn=conn)
        return VdiResult.unpack(rsp.args).vdi_id

    def release_vdi(self, vid: int, shared: bool = False, *,
                    conn: Connection | None = None) -> None:
        self.request(Op.RELEASE_VDI, VdiArgs(base_vdi_id=vid, type=1 if shared else 0).pack(),
                     conn=conn)

    def connect(self) -> Connection:
        """A new connection to the same sheep, outside the pool (the caller
        closes it)."""
        return Connection(self.pool.host, self.pool.port, self.pool.timeout)

    def read_vdis(self) -> bytes:
        """The bitmap of VDI ids in use (SD_NR_VDIS bits)."""
        _, out = self.request(Op.READ_VDIS, data_length=SD_NR_VDIS // 8)
        return bytes(out)

    def read_inode_header(self, vid: int) -> InodeHeader:
        out = self.read_obj(vid_to_vdi_oid(vid), SD_INODE_HEADER_SIZE)
        return InodeHeader.unpack(out)

    def read_index(self, hdr: InodeHeader) -> Index:
        """The data_vdi_id[] entries of the objects `hdr`'s size spans: a
        list, or for a hyper volume (its index is a B-tree over up to 2^32
        objects) a SparseIndex of the mapped ones. Walk it with
        index_items, look it up with index_owner."""
        if hdr.store_policy == HYPER_VOLUME:
            return HyperTree(self, hdr.vdi_id).sparse_index()
        n = hdr.nr_objects
        if not n:
            return []
        raw = self.read_obj(vid_to_vdi_oid(hdr.vdi_id), 4 * n, data_vid_offset(0))
        return list(struct.unpack(f"<{n}I", raw))

    def deleted_bitmap(self) -> bytes | None:
        """SD_OP_READ_DEL_VDIS, or None when the daemon keeps none (an
        older one marks a deleted inode only by clearing its name)."""
        rsp, out = self.request(Op.READ_DEL_VDIS, data_length=SD_NR_VDIS // 8, check=False)
        if rsp.result != Res.SUCCESS or len(out) < SD_NR_VDIS // 8:
            return None
        return bytes(out)

    def live_vdi_ids(self) -> list[int]:
        """Ids of every VDI and snapshot not deleted, ascending: the walk
        dog's parse_vdi() makes. Callers still skip inodes with no name
        (deleted by a daemon with no deleted bitmap)."""
        deleted = self.deleted_bitmap()
        return [vid for vid in bitmap_ids(self.read_vdis())
                if deleted is None or not bitmap_test(deleted, vid)]

    def list_vdis(self) -> list[InodeHeader]:
        """Every live VDI and snapshot, in vid order."""
        heads = (self.read_inode_header(vid) for vid in self.live_vdi_ids())
        return [h for h in heads if h.name]

    def get_cluster_default(self) -> ClusterDefaultResult:
        rsp, _ = self.request(Op.GET_CLUSTER_DEFAULT)
        return ClusterDefaultResult.unpack(rsp.args)

    # ---- cluster ----

    def make_fs(self, copies: int, *, copy_policy: int = 0,
                flags: int = ClusterFlag.AUTO_VNODES, block_size_shift: int = 22,
                store: str = "plain", ctime: int | None = None) -> None:
        """Format the cluster. `flags` are the cluster's (ClusterFlag);
        the default is dog's without options: the auto vnodes strategy,
        which sheep started without -V require."""
        if ctime is None:
            ctime = time.time_ns()
            # Sheepdog keeps seconds in the high 32 bits, nanoseconds below.
            ctime = ((ctime // 10**9) << 32) | (ctime % 10**9)
        args = ClusterArgs(ctime=ctime, copies=copies, copy_policy=copy_policy,
                           flags=flags, block_size_shift=block_size_shift)
        self.request(Op.MAKE_FS, args.pack(), data=store.encode().ljust(16, b"\0")[:16])

    def store_list(self) -> str:
        """The backends the node names for `dog cluster format -b`, as
        GET_STORE_LIST answers them (names, each followed by a space)."""
        _, out = self.request(Op.GET_STORE_LIST, data_length=STORE_LIST_LEN)
        return bytes(out).split(b"\0", 1)[0].decode(errors="replace")

    def shutdown(self) -> None:
        self.request(Op.SHUTDOWN)

    def node_list(self) -> list[SdNode]:
        rsp, out = self.request(Op.GET_NODE_LIST, data_length=SD_NODE_SIZE * 1024)
        return unpack_nodes(out, NodeResult.unpack(rsp.args).nr_nodes)

    def departed(self) -> list[tuple[str, str]]:
        """(node, why) for each node that left the cluster on a fault, as
        this node heard it (sheepblk's own op; [] from a sheep without it)."""
        rsp, out = self.request(Op.GET_DEPARTED, data_length=DEPARTED_BYTES, check=False)
        if rsp.result != Res.SUCCESS:
            return []
        return [(str(n), str(w)) for n, w in json.loads(bytes(out))]

    def cluster_info(self) -> ClusterInfo:
        """This sheep's cluster info: its flags say its vnodes strategy
        (what an unformatted sheep was started with)."""
        _, out = self.request(Op.CLUSTER_INFO,
                              data_length=CLUSTER_INFO_SIZE + SD_NODE_SIZE * 1024)
        return ClusterInfo.unpack(out)

    def set_vnodes(self, nr_vnodes: int) -> None:
        """This sheep's new vnodes (a fixed-strategy cluster). The payload
        is 8 bytes, the int first, as C dog sends it (sizeof a pointer)."""
        self.request(Op.SET_VNODES, data=struct.pack("<i4x", nr_vnodes))

    def stat_sheep(self) -> NodeResult:
        rsp, _ = self.request(Op.STAT_SHEEP)
        return NodeResult.unpack(rsp.args)

    def stat_cluster(self) -> tuple[int, list[EpochLog]]:
        """The cluster status code (result) and epoch history, newest first.

        The buffer grows until the whole history fits (BUFFER_SMALL: more
        nodes in an epoch than slots; every slot filled: more epochs), but
        never past MAX_DATA_LENGTH, where the newest epochs that fit are
        returned."""
        nodes, epochs = STAT_CLUSTER_NODES, STAT_CLUSTER_EPOCHS
        while True:
            stride = EPOCH_LOG_SIZE + nodes * SD_NODE_SIZE
            rsp, out = self.request(Op.STAT_CLUSTER, ClusterArgs(nodes_nr=nodes).pack(),
                                    data_length=stride * epochs, check=False)
            if rsp.result == Res.BUFFER_SMALL:
                nodes *= 2
                if (EPOCH_LOG_SIZE + nodes * SD_NODE_SIZE) * epochs > MAX_DATA_LENGTH:
                    raise SheepdogError(rsp.result, "stat cluster")
                continue
            logs = [EpochLog.unpack(out, off) for off in range(0, len(out) - stride + 1, stride)]
            if (len(logs) == epochs and logs[-1].epoch > 1
                    and stride * epochs * 2 <= MAX_DATA_LENGTH):
                epochs *= 2
                continue
            return rsp.result, logs

    def stat_recovery(self) -> RecoveryState:
        _, out = self.request(Op.STAT_RECOVERY, data_length=RECOVERY_STATE_SIZE)
        return RecoveryState.unpack(out)

    def flush(self, vid: int = 0) -> None:
        """Make every write so far durable on every copy (SD_OP_FLUSH_VDI)."""
        self.request(Op.FLUSH_VDI, ObjArgs(oid=vid_to_vdi_oid(vid) if vid else 0).pack())
