"""struct node_id and struct sd_node as they travel on the wire (80 bytes).

The leading 24 bytes are an rb_node in C: meaningless to a peer, sent as
zeros. Addresses are 16 bytes; an IPv4 address sits in the last four with
the first twelve zero, which is how Sheepdog tells the two apart.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from .constants import SD_DEFAULT_VNODES

_NODE = struct.Struct("<24x16sH16sH4xH2xIQ")
SD_NODE_SIZE = _NODE.size
assert SD_NODE_SIZE == 80
NODE_ID_SIZE = 40
_NODE_ID = struct.Struct("<16sH16sH4x")


def addr_to_bytes(host: str) -> bytes:
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return bytes(12) + ip.packed
    return ip.packed


def bytes_to_addr(raw: bytes) -> str:
    if raw[:12] == bytes(12) and raw[12]:
        return str(ipaddress.IPv4Address(raw[12:16]))
    return str(ipaddress.IPv6Address(raw))


class NodeId(NamedTuple):
    addr: str
    port: int

    def __str__(self) -> str:
        if ":" in self.addr:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"

    def pack(self) -> bytes:
        return _NODE_ID.pack(addr_to_bytes(self.addr), self.port, bytes(16), 0)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> NodeId:
        addr, port, _io_addr, _io_port = _NODE_ID.unpack_from(data, offset)
        return cls(bytes_to_addr(addr), port)


class SdNode(NamedTuple):
    nid: NodeId
    nr_vnodes: int = SD_DEFAULT_VNODES
    zone: int = 0
    space: int = 0

    def pack(self) -> bytes:
        return _NODE.pack(
            addr_to_bytes(self.nid.addr), self.nid.port, bytes(16), 0,
            self.nr_vnodes, self.zone, self.space,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> SdNode:
        addr, port, _io_addr, _io_port, vnodes, zone, space = _NODE.unpack_from(data, offset)
        return cls(NodeId(bytes_to_addr(addr), port), vnodes, zone, space)


def pack_nodes(nodes: list[SdNode]) -> bytes:
    """Nodes back to back, SD_NODE_SIZE bytes each (GET_NODE_LIST)."""
    return b"".join(n.pack() for n in nodes)


def unpack_nodes(data: bytes | bytearray | memoryview, count: int | None = None) -> list[SdNode]:
    """The first `count` nodes of `data` (all that fit when None)."""
    if count is None:
        count = len(data) // SD_NODE_SIZE
    return [SdNode.unpack(data, i * SD_NODE_SIZE) for i in range(count)]
