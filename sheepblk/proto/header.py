"""The 48-byte request and response headers (struct sd_req / sd_rsp).

Both are little-endian: 16 common bytes, then a 32-byte union whose view
depends on the opcode. A header keeps its union as raw bytes (`args`) and
the views below pack and unpack them, so decoding never has to guess which
view a peer meant.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import SD_PROTO_VER, SD_REQ_SIZE, SD_RSP_SIZE
from .node import NodeId, addr_to_bytes, bytes_to_addr

_COMMON = struct.Struct("<BBHIII")
_REQ = struct.Struct("<BBHIII32s")
_RSP = struct.Struct("<BBHIIII28s")
_ZERO32 = bytes(32)
_ZERO28 = bytes(28)


class HeaderError(ValueError):
    """A header that cannot be decoded (too short)."""


class Request(NamedTuple):
    opcode: int
    flags: int = 0
    epoch: int = 0
    id: int = 0
    data_length: int = 0
    args: bytes = _ZERO32
    proto_ver: int = SD_PROTO_VER

    def pack(self) -> bytes:
        return _REQ.pack(
            self.proto_ver, self.opcode, self.flags, self.epoch, self.id,
            self.data_length, self.args,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Request:
        if len(data) < SD_REQ_SIZE:
            raise HeaderError(f"request header is {len(data)} bytes, needs {SD_REQ_SIZE}")
        ver, op, flags, epoch, rid, dlen, args = _REQ.unpack_from(data)
        return cls(op, flags, epoch, rid, dlen, args, ver)


class Response(NamedTuple):
    opcode: int
    result: int = 0
    flags: int = 0
    epoch: int = 0
    id: int = 0
    data_length: int = 0
    args: bytes = _ZERO28
    proto_ver: int = SD_PROTO_VER

    def pack(self) -> bytes:
        return _RSP.pack(
            self.proto_ver, self.opcode, self.flags, self.epoch, self.id,
            self.data_length, self.result, self.args,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Response:
        if len(data) < SD_RSP_SIZE:
            raise HeaderError(f"response header is {len(data)} bytes, needs {SD_RSP_SIZE}")
        ver, op, flags, epoch, rid, dlen, result, args = _RSP.unpack_from(data)
        return cls(op, result, flags, epoch, rid, dlen, args, ver)


# ---- request union views (32 bytes) ----

_OBJ = struct.Struct("<QQBBBBIII")


class ObjArgs(NamedTuple):
    """sd_req.obj: object I/O (read, write, create-and-write, remove, peers)."""

    oid: int = 0
    cow_oid: int = 0
    copies: int = 0
    copy_policy: int = 0
    ec_index: int = 0
    reserved: int = 0
    tgt_epoch: int = 0
    offset: int = 0
    pad: int = 0

    def pack(self) -> bytes:
        return _OBJ.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> ObjArgs:
        return cls(*_OBJ.unpack(args))


_VDI = struct.Struct("<QIBBBBII8x")


class VdiArgs(NamedTuple):
    """sd_req.vdi: create, look up, lock, delete a VDI."""

    vdi_size: int = 0
    base_vdi_id: int = 0
    copies: int = 0
    copy_policy: int = 0
    store_policy: int = 0
    block_size_shift: int = 0
    snapid: int = 0
    type: int = 0

    def pack(self) -> bytes:
        return _VDI.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> VdiArgs:
        return cls(*_VDI.unpack(args))


_CLUSTER = struct.Struct("<QQBBHIIB3x")


class ClusterArgs(NamedTuple):
    """sd_req.cluster: make fs (format), cluster-wide settings."""

    oid: int = 0
    ctime: int = 0
    copies: int = 0
    copy_policy: int = 0
    flags: int = 0
    tag: int = 0
    nodes_nr: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _CLUSTER.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> ClusterArgs:
        return cls(*_CLUSTER.unpack(args))


_VDI_STATE = struct.Struct("<IIBBBB20x")


class VdiStateArgs(NamedTuple):
    """sd_req.vdi_state: NOTIFY_VDI_ADD and friends."""

    old_vid: int = 0
    new_vid: int = 0
    copies: int = 0
    set_bitmap: int = 0
    copy_policy: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _VDI_STATE.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> VdiStateArgs:
        return cls(*_VDI_STATE.unpack(args))


_FORW = struct.Struct("<Q16sH6x")


class ForwArgs(NamedTuple):
    """sd_req.forw (include/sheepdog_proto.h: oid, addr[16], port):
    SD_OP_REPAIR_REPLICA's object and the node to copy it from. Here
    because dog writes it and every daemon reads it: one layout for both."""

    oid: int
    src: NodeId

    def pack(self) -> bytes:
        return _FORW.pack(self.oid, addr_to_bytes(self.src.addr), self.src.port)

    @classmethod
    def unpack(cls, args: bytes) -> ForwArgs:
        oid, addr, port = _FORW.unpack(args)
        return cls(oid, NodeId(bytes_to_addr(addr), port))


# ---- response union views (the 28 bytes after `result`) ----

_RSP_OBJ = struct.Struct("<B3xQ16x")


class ObjResult(NamedTuple):
    copies: int = 0
    offset: int = 0

    def pack(self) -> bytes:
        return _RSP_OBJ.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> ObjResult:
        return cls(*_RSP_OBJ.unpack(args))


_RSP_VDI = struct.Struct("<IIIBB2x12x")


class VdiResult(NamedTuple):
    rsvd: int = 0
    vdi_id: int = 0
    attr_id: int = 0
    copies: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _RSP_VDI.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> VdiResult:
        return cls(*_RSP_VDI.unpack(args))


_RSP_NODE = struct.Struct("<I8xQQ")


class NodeResult(NamedTuple):
    nr_nodes: int = 0
    store_size: int = 0
    store_free: int = 0

    def pack(self) -> bytes:
        return _RSP_NODE.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> NodeResult:
        return cls(*_RSP_NODE.unpack(args))


_RSP_HASH = struct.Struct("<4x20s4x")


class HashResult(NamedTuple):
    digest: bytes = bytes(20)

    def pack(self) -> bytes:
        return _RSP_HASH.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> HashResult:
        return cls(*_RSP_HASH.unpack(args))


_RSP_DEFAULT = struct.Struct("<BBB25x")


class ClusterDefaultResult(NamedTuple):
    nr_copies: int = 0
    copy_policy: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _RSP_DEFAULT.pack(*self)

    @classmethod
    def unpack(cls, args: bytes) -> ClusterDefaultResult:
        return cls(*_RSP_DEFAULT.unpack(args))


def peek_data_length(header: bytes | bytearray | memoryview) -> int:
    """The payload length of a header (same place in requests and responses)."""
    return _COMMON.unpack_from(header)[5]
