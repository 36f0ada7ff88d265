"""The text of the status files, exactly as Sheepdog 1.0's `dog` prints it.

vdi/list = `dog vdi list`, node/list = `dog node list`, node/info =
`dog node info`, cluster/info = `dog cluster info` (Sheepdog's own sheepfs
runs those commands; we build the same text from client records instead of
spawning a process per open).

Formats follow dog/vdi.c, dog/node.c, dog/cluster.c and dog/common.c of
Sheepdog v1.0.1; the pieces and rows come from sheepblk.client.report,
which `dog` uses too.

Functions named *_text take records and are pure; gather_* talk to the
cluster through a SheepClient (blocking; callers run them in a thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..client import ClientError, SheepClient, index_items
from ..client.hyper import Index
from ..client.report import (
    NODE_LIST_HEADER,
    VDI_LIST_HEADER,
    node_addr,
    node_list_row,
    sort_nodes,
    strnumber,
    vdi_list_row,
)
from ..proto import EpochLog, InodeHeader, NodeResult, Res, SdNode, strerror
from ..proto.constants import ClusterFlag

NODE_INFO_HEADER = "Id\tSize\tUsed\tAvail\tUse%"
EPOCH_HEADER = "Epoch Time           Version [Host:Port:V-Nodes,,,]"


class StatusError(Exception):
    """The cluster could not answer what a status file needs."""


def _percent(used: int, total: int) -> int:
    return int(used / total * 100) if total else 0


# ---- vdi list ----

def vdi_row(hdr: InodeHeader, index: Index) -> str:
    """One `dog vdi list` line; `index` is data_vdi_id[] over the VDI's
    size (a SparseIndex for a hyper volume)."""
    owners = [v for _, v in index_items(index)]
    my_objs = sum(1 for v in owners if v == hdr.vdi_id)
    cow_objs = len(owners) - my_objs
    osize = hdr.object_size
    return vdi_list_row(hdr, my_objs * osize, cow_objs * osize, raw=False)


def vdi_list_text(vdis: Iterable[tuple[InodeHeader, Index]]) -> str:
    return "".join(line + "\n" for line in
                   [VDI_LIST_HEADER, *(vdi_row(h, idx) for h, idx in vdis)])


# ---- node list / info ----

def node_list_text(nodes: Iterable[SdNode]) -> str:
    lines = [NODE_LIST_HEADER]
    for i, n in enumerate(sort_nodes(nodes)):
        lines.append(node_list_row(i, n, raw=False))
    return "".join(line + "\n" for line in lines)


def node_info_text(stats: list[NodeResult | None], total_vdi_size: int) -> str:
    """`stats` in node order; None for a node that did not answer (dog
    skips its line but keeps counting the others)."""
    lines = [NODE_INFO_HEADER]
    total_size = total_free = 0
    i = 0
    for st in stats:
        if st is None:
            continue
        used = st.store_size - st.store_free
        lines.append(f"{i:2d}\t{strnumber(st.store_size)}\t{strnumber(used)}\t"
                     f"{strnumber(st.store_free)}\t{_percent(used, st.store_size):3d}%")
        i += 1
        total_size += st.store_size
        total_free += st.store_free
    total_used = total_size - total_free
    lines.append(f"Total\t{strnumber(total_size)}\t{strnumber(total_used)}\t"
                 f"{strnumber(total_free)}\t{_percent(total_used, total_size):3d}%")
    lines.append("")
    lines.append(f"Total virtual image size\t{strnumber(total_vdi_size)}")
    return "".join(line + "\n" for line in lines)


# ---- cluster info ----

def cluster_info_text(result: int, logs: list[EpochLog]) -> str:
    """`dog cluster info` (not verbose) from SD_OP_STAT_CLUSTER's answer."""
    if result == Res.SUCCESS:
        recovery = "disabled" if logs and logs[0].disable_recovery else "enabled"
        status = f"running, auto-recovery {recovery}"
    else:
        status = strerror(result)
    out = [f"Cluster status: {status}\n", "\n"]
    if logs:
        # ctime() ends in a newline and dog adds its own: a blank line.
        out.append(f"Cluster created at {time.ctime(logs[0].ctime >> 32)}\n\n")
        out.append(EPOCH_HEADER + "\n")
    for log in logs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(log.time))
        nodes = ", ".join(f"{node_addr(n.nid)}:{n.nr_vnodes}" for n in log.nodes)
        if log.flags & ClusterFlag.DISKMODE:
            nodes = ", ".join(f"{node_addr(n.nid)}:{n.nr_vnodes}(0)" for n in log.nodes)
        out.append(f"{when} {log.epoch:6d} [{nodes}]\n")
    return "".join(out)


# ---- gathering (blocking) ----

def gather_vdis(client: SheepClient, with_index: bool = True
                ) -> list[tuple[InodeHeader, Index]]:
    """Every live VDI and snapshot in vid order, as dog's parse_vdi() walks them."""
    out = []
    for vid in client.live_vdi_ids():
        hdr = client.read_inode_header(vid)
        if not hdr.name:
            continue
        out.append((hdr, client.read_index(hdr) if with_index else []))
    return out


def gather_vdi_list(client: SheepClient) -> str:
    return vdi_list_text(gather_vdis(client))


def gather_node_list(client: SheepClient) -> str:
    return node_list_text(client.node_list())


def gather_node_info(client: SheepClient, timeout: float) -> str:
    """STAT_SHEEP sent to every node itself, as dog does."""
    stats: list[NodeResult | None] = []
    for node in sort_nodes(client.node_list()):
        try:
            with SheepClient(node.nid.addr, node.nid.port, pool_size=1) as peer:
                peer.pool.timeout = timeout
                stats.append(peer.stat_sheep())
        except ClientError:
            stats.append(None)
    if not any(stats):
        raise StatusError("Cannot get information from any nodes")
    total_vdi = sum(h.vdi_size for h, _ in gather_vdis(client, with_index=False)
                    if not h.is_snapshot)
    return node_info_text(stats, total_vdi)


def gather_cluster_info(client: SheepClient) -> str:
    result, logs = client.stat_cluster()
    return cluster_info_text(result, logs)
