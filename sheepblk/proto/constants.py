"""Sheepdog protocol version 0x02 numbers: opcodes, flags, result codes.

The values are Sheepdog 1.0's (include/sheepdog_proto.h and
include/internal_proto.h): clients we did not write send them, so none of
them is ours to choose.
"""

from __future__ import annotations

import enum

SD_PROTO_VER = 0x02
SD_SHEEP_PROTO_VER = 0x0A
SD_LISTEN_PORT = 7000
SD_REQ_SIZE = 48
SD_RSP_SIZE = 48

SD_DEFAULT_COPIES = 3
SD_MAX_COPIES = 31
SD_DEFAULT_VNODES = 128
SD_DEFAULT_BLOCK_SIZE_SHIFT = 22
SD_DATA_OBJ_SIZE = 1 << 22
SD_NR_VDIS = 1 << 24
SD_MAX_VDI_LEN = 256
SD_MAX_VDI_TAG_LEN = 256
SD_MAX_VDI_ATTR_KEY_LEN = 256
SD_MAX_VDI_ATTR_VALUE_LEN = 65536
SD_MAX_SNAPSHOT_TAG_LEN = 256
OLD_MAX_DATA_OBJS = 1 << 20
MAX_DATA_OBJS = 1 << 32
SD_INODE_DATA_INDEX = 1 << 20
SD_OLD_MAX_VDI_SIZE = SD_DATA_OBJ_SIZE * OLD_MAX_DATA_OBJS
SD_MAX_VDI_SIZE = SD_DATA_OBJ_SIZE * MAX_DATA_OBJS
STORE_LEN = 16
CURRENT_VDI_ID = 0

LOCK_TYPE_NORMAL = 0
LOCK_TYPE_SHARED = 1

# Our own limit on a request payload: big enough for any object a real
# client sends (a 4 MiB data object, a 12 MiB inode), small enough that a
# garbage length cannot make the daemon allocate gigabytes.
MAX_DATA_LENGTH = 64 << 20


class Op(enum.IntEnum):
    """Opcodes. Below 0x80 public (QEMU speaks them), 0x80 and up internal."""

    CREATE_AND_WRITE_OBJ = 0x01
    READ_OBJ = 0x02
    WRITE_OBJ = 0x03
    REMOVE_OBJ = 0x04
    DISCARD_OBJ = 0x05
    NEW_VDI = 0x11
    LOCK_VDI = 0x12
    RELEASE_VDI = 0x13
    GET_VDI_INFO = 0x14
    READ_VDIS = 0x15
    FLUSH_VDI = 0x16
    DEL_VDI = 0x17
    GET_CLUSTER_DEFAULT = 0x18

    GET_NODE_LIST = 0x82
    MAKE_FS = 0x84
    SHUTDOWN = 0x85
    STAT_SHEEP = 0x86
    STAT_CLUSTER = 0x87
    GET_VDI_ATTR = 0x89
    FORCE_RECOVER = 0x8A
    GET_STORE_LIST = 0x90
    SNAPSHOT = 0x91
    RESTORE = 0x92
    GET_SNAP_FILE = 0x93
    CLEANUP = 0x94
    TRACE_STATUS = 0x95
    TRACE_READ_BUF = 0x96
    STAT_RECOVERY = 0x97
    FLUSH_DEL_CACHE = 0x98
    NOTIFY_VDI_DEL = 0x99
    KILL_NODE = 0x9A
    TRACE_ENABLE = 0x9B
    TRACE_DISABLE = 0x9C
    GET_OBJ_LIST = 0xA1
    GET_EPOCH = 0xA2
    CREATE_AND_WRITE_PEER = 0xA3
    READ_PEER = 0xA4
    WRITE_PEER = 0xA5
    REMOVE_PEER = 0xA6
    ENABLE_RECOVER = 0xA8
    DISABLE_RECOVER = 0xA9
    GET_VDI_COPIES = 0xAB
    COMPLETE_RECOVERY = 0xAC
    FLUSH_NODES = 0xAD
    FLUSH_PEER = 0xAE
    NOTIFY_VDI_ADD = 0xAF
    DELETE_CACHE = 0xB0
    MD_INFO = 0xB1
    MD_PLUG = 0xB2
    MD_UNPLUG = 0xB3
    GET_HASH = 0xB4
    REWEIGHT = 0xB5
    GET_CACHE_INFO = 0xB6
    CACHE_PURGE = 0xB7
    STAT = 0xB8
    GET_LOGLEVEL = 0xB9
    SET_LOGLEVEL = 0xBA
    NFS_CREATE = 0xBB
    NFS_DELETE = 0xBC
    EXIST = 0xBD
    CLUSTER_INFO = 0xBE
    ALTER_CLUSTER_COPY = 0xBF
    ALTER_VDI_COPY = 0xC0
    DECREF_OBJ = 0xC1
    DECREF_PEER = 0xC2
    PREVENT_INODE_UPDATE = 0xC3
    ALLOW_INODE_UPDATE = 0xC4
    REPAIR_REPLICA = 0xC5
    OIDS_EXIST = 0xC6
    VDI_STATE_CHECKPOINT_CTL = 0xC7
    INODE_COHERENCE = 0xC8
    READ_DEL_VDIS = 0xC9
    GET_RECOVERY = 0xCA
    SET_RECOVERY = 0xCB
    SET_VNODES = 0xCC
    GET_VNODES = 0xCD
    # sheepblk's own, outside Sheepdog's range: the nodes that left the
    # cluster on a fault, and why (`dog node info` prints them).
    GET_DEPARTED = 0xF0


class Flag(enum.IntFlag):
    """Request flags (the 16-bit `flags` field of sd_req)."""

    CMD_WRITE = 0x01
    CMD_COW = 0x02
    CMD_CACHE = 0x04
    CMD_DIRECT = 0x08
    CMD_PIGGYBACK = 0x10
    CMD_TGT = 0x20
    CMD_RECOVERY = 0x0080
    # 0x0100 means WILDCARD on object ops and CREAT on VDI ops, as in Sheepdog.
    CMD_WILDCARD = 0x0100
    CMD_EXCL = 0x0200
    CMD_DEL = 0x0400


SD_FLAG_CMD_CREAT = 0x0100


class Res(enum.IntEnum):
    """Result codes carried in sd_rsp.result."""

    SUCCESS = 0x00
    UNKNOWN = 0x01
    NO_OBJ = 0x02
    EIO = 0x03
    VDI_EXIST = 0x04
    INVALID_PARMS = 0x05
    SYSTEM_ERROR = 0x06
    VDI_LOCKED = 0x07
    NO_VDI = 0x08
    NO_BASE_VDI = 0x09
    VDI_READ = 0x0A
    VDI_WRITE = 0x0B
    BASE_VDI_READ = 0x0C
    BASE_VDI_WRITE = 0x0D
    NO_TAG = 0x0E
    STARTUP = 0x0F
    VDI_NOT_LOCKED = 0x10
    SHUTDOWN = 0x11
    NO_MEM = 0x12
    FULL_VDI = 0x13
    VER_MISMATCH = 0x14
    NO_SPACE = 0x15
    WAIT_FOR_FORMAT = 0x16
    WAIT_FOR_JOIN = 0x17
    JOIN_FAILED = 0x18
    HALT = 0x19
    READONLY = 0x1A
    INODE_INVALIDATED = 0x1D

    OLD_NODE_VER = 0x81
    NEW_NODE_VER = 0x82
    NOT_FORMATTED = 0x83
    INVALID_CTIME = 0x84
    INVALID_EPOCH = 0x85
    NETWORK_ERROR = 0x86
    NO_CACHE = 0x87
    BUFFER_SMALL = 0x88
    FORCE_RECOVER = 0x89
    NO_STORE = 0x8A
    NO_SUPPORT = 0x8B
    NODE_IN_RECOVERY = 0x8C
    KILLED = 0x8D
    OID_EXIST = 0x8E
    AGAIN = 0x8F
    STALE_OBJ = 0x90
    CLUSTER_ERROR = 0x91
    VDI_NOT_EMPTY = 0x92
    NOT_FOUND = 0x93
    INCOMPLETE = 0x94
    COLLECTING_CINFO = 0x95
    GATEWAY_MODE = 0x97
    INVALID_VNODES_STRATEGY = 0x98
    NO_CHECKPOINT_ENTRY = 0x99


_MESSAGES: dict[int, str] = {
    Res.SUCCESS: "Success",
    Res.UNKNOWN: "Unknown error",
    Res.NO_OBJ: "No object found",
    Res.EIO: "I/O error",
    Res.VDI_EXIST: "VDI exists already",
    Res.INVALID_PARMS: "Invalid parameters",
    Res.SYSTEM_ERROR: "System error",
    Res.VDI_LOCKED: "VDI is locked",
    Res.NO_VDI: "No VDI found",
    Res.NO_BASE_VDI: "No base VDI found",
    Res.VDI_READ: "Failed to read from requested VDI",
    Res.VDI_WRITE: "Failed to write to requested VDI",
    Res.BASE_VDI_READ: "Failed to read from base VDI",
    Res.BASE_VDI_WRITE: "Failed to write to base VDI",
    Res.NO_TAG: "Failed to find requested tag",
    Res.STARTUP: "System is still booting",
    Res.VDI_NOT_LOCKED: "VDI is not locked",
    Res.SHUTDOWN: "System is shutting down",
    Res.NO_MEM: "Out of memory on server",
    Res.FULL_VDI: "Maximum number of VDIs reached",
    Res.VER_MISMATCH: "Protocol version mismatch",
    Res.NO_SPACE: "Server has no space for new objects",
    Res.WAIT_FOR_FORMAT: "Waiting for cluster to be formatted",
    Res.WAIT_FOR_JOIN: "Waiting for other nodes to join cluster",
    Res.JOIN_FAILED: "Node has failed to join cluster",
    Res.HALT: "IO has halted as there are not enough living nodes",
    Res.READONLY: "Object is read-only",
    Res.INODE_INVALIDATED: "Inode object is invalidated",
    Res.INVALID_VNODES_STRATEGY: "Invalid cluster vnodes strategy",
    Res.GATEWAY_MODE: "Targeted node is gateway mode",
    Res.OLD_NODE_VER: "Request has an old epoch",
    Res.NEW_NODE_VER: "Request has a new epoch",
    Res.NOT_FORMATTED: "Cluster has not been formatted",
    Res.INVALID_CTIME: "Creation times differ",
    Res.INVALID_EPOCH: "Invalid epoch",
    Res.NETWORK_ERROR: "Network error between sheep",
    Res.NO_CACHE: "No cache object found",
    Res.BUFFER_SMALL: "The buffer is too small",
    Res.FORCE_RECOVER: "Cluster is running/halted and cannot be force recovered",
    Res.NO_STORE: "Targeted backend store is not found",
    Res.NO_SUPPORT: "Operation is not supported",
    Res.NODE_IN_RECOVERY: "Targeted node is in recovery",
    Res.KILLED: "Node is killed",
    Res.OID_EXIST: "Object ID exists already",
    Res.AGAIN: "Ask to try again",
    Res.STALE_OBJ: "Object may be stale",
    Res.CLUSTER_ERROR: "Cluster driver error",
    Res.VDI_NOT_EMPTY: "VDI is not empty",
    Res.NOT_FOUND: "Cannot find target",
}


def strerror(code: int) -> str:
    """Sheepdog's message for a result code, the text `dog` prints."""
    msg = _MESSAGES.get(code)
    if msg is None:
        return f"Invalid error code {code:x}"
    return msg


class ClusterStatus(enum.IntEnum):
    """enum sd_status: the cluster state `dog cluster info` reports."""

    OK = 1
    WAIT = 2
    SHUTDOWN = 3
    KILLED = 4


class LockState(enum.IntEnum):
    """A VDI's lock state in struct vdi_state (`dog vdi lock list`)."""

    UNLOCKED = 1
    LOCKED = 2
    SHARED = 3


class ClusterFlag(enum.IntFlag):
    """Cluster-wide flags set at format (SD_CLUSTER_FLAG_*, epoch log `flags`)."""

    STRICT = 0x0001
    DISKMODE = 0x0002
    AUTO_VNODES = 0x0004
    USE_LOCK = 0x0008
    RECYCLE_VID = 0x0010
    AVOID_DISKFULL = 0x0020
    # Ours, not Sheepdog's: objects placed by straw2 (sheepblk/straw2.py)
    # instead of the vnode ring. Far from C's bits, which grow upwards.
    STRAW2 = 0x1000
