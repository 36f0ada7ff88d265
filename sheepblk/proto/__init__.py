"""Sheepdog's wire format as pure functions and records: no I/O here.

Everything a peer can observe (header layouts, opcodes, result codes, the
inode layout, object ids, hashes) lives in this package, so the daemon and
every client agree by construction.
"""

from .constants import (
    MAX_DATA_LENGTH,
    SD_DATA_OBJ_SIZE,
    SD_DEFAULT_COPIES,
    SD_DEFAULT_VNODES,
    SD_LISTEN_PORT,
    SD_MAX_VDI_LEN,
    SD_MAX_VDI_SIZE,
    SD_MAX_VDI_TAG_LEN,
    SD_NR_VDIS,
    SD_PROTO_VER,
    SD_REQ_SIZE,
    SD_RSP_SIZE,
    SD_SHEEP_PROTO_VER,
    ClusterFlag,
    ClusterStatus,
    Flag,
    LockState,
    Op,
    Res,
    strerror,
)
from .fnv import sd_hash, sd_hash_64, sd_hash_next, sd_hash_oid, sd_hash_vdi
from .header import (
    ClusterArgs,
    ClusterDefaultResult,
    HashResult,
    HeaderError,
    NodeResult,
    ObjArgs,
    ObjResult,
    Request,
    Response,
    VdiArgs,
    VdiResult,
    VdiStateArgs,
    peek_data_length,
)
from .inode import (
    SD_INODE_HEADER_SIZE,
    SD_INODE_SIZE,
    Inode,
    InodeHeader,
    data_vid_offset,
)
from .node import SD_NODE_SIZE, NodeId, SdNode, pack_nodes, unpack_nodes
from .oid import (
    data_oid_to_idx,
    get_objsize,
    is_data_obj,
    is_vdi_attr_obj,
    is_vdi_obj,
    oid_name,
    oid_to_vid,
    vid_to_attr_oid,
    vid_to_data_oid,
    vid_to_vdi_oid,
    vid_to_vmstate_oid,
)
from .records import EpochLog, RecoveryState, VdiState
from .vdi_attr import SD_ATTR_OBJ_SIZE, VdiAttr

__all__ = [name for name in dir() if not name.startswith("_")]
