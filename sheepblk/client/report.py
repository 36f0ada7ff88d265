"""Status text exactly as Sheepdog 1.0's `dog` prints it.

Shared by `dog` and sheepfs (whose vdi/list, node/list, node/info and
cluster/info files show the same text as the commands), so the two can never
drift apart. Pure functions over records from sheepblk.proto; formats follow
dog/common.c (strnumber), dog/node.c, dog/vdi.c and dog/cluster.c.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..proto import InodeHeader, NodeId, SdNode
from ..proto.node import addr_to_bytes

_UNITS = ("MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def strnumber(size: int, raw: bool = False) -> str:
    """Bytes as dog prints them: '1.0 GB', '8.0 MB', '79 GB'; decimal bytes
    in raw mode."""
    if raw:
        return str(size)
    value = size / (1024 * 1024)
    unit = 0
    while unit < len(_UNITS) - 1 and value >= 1024:
        unit += 1
        value /= 1024
    if value >= 10:
        return f"{value:.0f} {_UNITS[unit]}"
    return f"{value:.1f} {_UNITS[unit]}"


def ctime_seconds(ctime: int) -> int:
    """Sheepdog timestamps keep seconds in the high 32 bits."""
    return ctime >> 32


def localtime_str(seconds: int, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(seconds))


def raw_escape(name: str) -> str:
    """Raw output separates fields by spaces, so a VDI name escapes
    whitespace and backslashes with a backslash (scripts unescape it)."""
    return "".join("\\" + ch if ch.isspace() or ch == "\\" else ch for ch in name)


def node_addr(nid: NodeId) -> str:
    """HOST:PORT as Sheepdog's addr_to_str (no brackets around IPv6)."""
    return f"{nid.addr}:{nid.port}"


def sort_nodes(nodes: Iterable[SdNode]) -> list[SdNode]:
    """The order of dog's node tree: address bytes, then port. Node ids
    given to `dog node kill` count in this order."""
    return sorted(nodes, key=lambda n: (addr_to_bytes(n.nid.addr), n.nid.port))


def redundancy(nr_copies: int, copy_policy: int) -> str:
    """'3' for replication, 'D:P' for erasure coding."""
    if copy_policy:
        data = (copy_policy >> 4) * 2
        parity = copy_policy & 0x0F
        return f"{data}:{parity}"
    return str(nr_copies)


# ---- rows of the list commands ----

NODE_LIST_HEADER = "  Id   Host:Port         V-Nodes       Zone"


def node_list_row(i: int, node: SdNode, raw: bool) -> str:
    host = node_addr(node.nid)
    if raw:
        return f"{i} {host} {node.nr_vnodes} {node.zone}"
    return f"{i:4d}   {host:<20s}\t{node.nr_vnodes:2d}{node.zone:11d}"


VDI_LIST_HEADER = ("  Name        Id    Size    Used  Shared    Creation time   VDI id"
                   "  Copies  Tag   Block Size Shift")


def vdi_kind(hdr: InodeHeader, raw: bool) -> str:
    """'s' snapshot, 'c' clone, then ' ' (or '=' in raw mode)."""
    if hdr.is_snapshot:
        return "s"
    if hdr.snap_id == 1 and hdr.parent_vdi_id != 0:
        return "c"
    return "=" if raw else " "


def vdi_list_row(hdr: InodeHeader, used: int, shared: int, raw: bool) -> str:
    """One `dog vdi list` line; `used`/`shared` are bytes."""
    snapid = hdr.snap_id if hdr.is_snapshot else 0
    seconds = ctime_seconds(hdr.create_time)
    copies = redundancy(hdr.nr_copies, hdr.copy_policy)
    if raw:
        return (f"{vdi_kind(hdr, raw)} {raw_escape(hdr.name)} {snapid} {hdr.vdi_size} "
                f"{used} {shared} {seconds} {hdr.vdi_id:x} {copies} {hdr.tag} "
                f"{hdr.block_size_shift}")
    date = localtime_str(seconds, "%Y-%m-%d %H:%M")
    return (f"{vdi_kind(hdr, raw)} {hdr.name:<8s} {snapid:5d} {strnumber(hdr.vdi_size):>7s} "
            f"{strnumber(used):>7s} {strnumber(shared):>7s} {date}  {hdr.vdi_id:7x} "
            f"{copies:>6s} {hdr.tag:>13s} {hdr.block_size_shift:3d}")


def cluster_time(seconds: int, raw: bool) -> str:
    if raw:
        return str(seconds)
    return localtime_str(seconds, "%Y-%m-%d %H:%M:%S")
