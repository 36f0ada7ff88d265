"""`vdi check` / `cluster check`: compare the replicas of every object of a
VDI and repair the ones that differ from the majority or are missing.

As dog does it: the expected holders come from the ring of the current
membership (sheepblk.ring, a pure function of the node list, the
same recipe the daemons use); each holder is asked for the object's hash
(SD_OP_GET_HASH), a Boyer-Moore majority vote picks the good copy, and a
holder with a missing or different copy is told to fetch it from a good one
(SD_OP_REPAIR_REPLICA). The daemons do the copying; dog only compares.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import click

from sheepblk.client import ClientError, HyperTree, SheepClient
from sheepblk.client.hyper import HYPER_VOLUME
from sheepblk.placement import PlacementRing, ring_for
from sheepblk.proto import (
    ForwArgs,
    HashResult,
    InodeHeader,
    ObjArgs,
    Op,
    Res,
    SdNode,
    ec,
    strerror,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT

from .errors import EXIT_FAILURE, QuietError
from .format import node_addr
from .inodes import VdiInode
from .options import Target
from .progress import Progress


class Holders:
    """One client per node, opened lazily and closed together."""

    def __init__(self) -> None:
        self._clients: dict[SdNode, SheepClient] = {}

    def client(self, node: SdNode) -> SheepClient:
        c = self._clients.get(node)
        if c is None:
            c = self._clients[node] = Target.node_client(node.nid)
        return c

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


def _hash_of(holders: Holders, node: SdNode, oid: int, epoch: int) -> bytes | None:
    """The object's digest on `node`, or None when the node lacks it."""
    args = ObjArgs(oid=oid, tgt_epoch=epoch).pack()
    try:
        rsp, _ = holders.client(node).request(Op.GET_HASH, args, epoch=epoch, check=False)
    except ClientError as e:
        raise QuietError(f"failed to read {oid:x} from {node_addr(node.nid)}, {e}",
                         EXIT_FAILURE) from None
    if rsp.result == Res.SUCCESS:
        return HashResult.unpack(rsp.args).digest
    if rsp.result == Res.NO_OBJ:
        return None
    raise QuietError(f"failed to read {oid:x} from {node_addr(node.nid)}, "
                     f"{strerror(rsp.result)}", EXIT_FAILURE)


def _exists(holders: Holders, node: SdNode, oid: int, epoch: int) -> bool:
    """SD_OP_EXIST: whether `node` stores the object (no hashing)."""
    try:
        rsp, _ = holders.client(node).request(Op.EXIST, ObjArgs(oid=oid).pack(), epoch=epoch,
                                              check=False)
    except ClientError as e:
        raise QuietError(f"failed to ask {node_addr(node.nid)} for {oid:x}, {e}",
                         EXIT_FAILURE) from None
    if rsp.result in (Res.SUCCESS, Res.NO_OBJ):
        return rsp.result == Res.SUCCESS
    raise QuietError(f"{node_addr(node.nid)}: hit an unexpected error "
                     f"({strerror(rsp.result)})", EXIT_FAILURE)


def majority(digests: list[bytes | None]) -> bytes | None:
    """The digest more than half of the live copies agree on, if any."""
    live = [d for d in digests if d is not None]
    candidate, count = None, 0
    for d in live:
        if count == 0:
            candidate = d
        count += 1 if d == candidate else -1
    if candidate is None:
        return None
    agree = sum(1 for d in live if d == candidate)
    return candidate if agree > len(live) // 2 else None


def check_object(holders: Holders, ring: PlacementRing, oid: int, copies: int, epoch: int) -> None:
    nodes = ring.oid_to_nodes(oid, copies)
    digests = [_hash_of(holders, n, oid, epoch) for n in nodes]
    good = majority(digests)
    if good is None:
        what = "no node has" if all(d is None for d in digests) else "no majority of"
        print(f"{what} {oid:x}", file=sys.stderr)
        return
    src = nodes[digests.index(good)]
    forw = ForwArgs(oid, src.nid).pack()
    for node, digest in zip(nodes, digests, strict=True):
        if digest == good:
            continue
        try:
            rsp, _ = holders.client(node).request(Op.REPAIR_REPLICA, forw, epoch=epoch,
                                                  check=False)
            ok = rsp.result == Res.SUCCESS
        except ClientError:
            ok = False
        if not ok:
            print(f"failed to repair object {oid:016x} from {node_addr(src.nid)} "
                  f"to {node_addr(node.nid)}", file=sys.stderr)
            continue
        click.echo(f"fixed {'replica' if digest is not None else 'missing'} {oid:x}")


def _placement(client: SheepClient, nodes: Iterable[SdNode],
               hdr: InodeHeader) -> tuple[PlacementRing, int, int]:
    """(ring, copies, epoch) for checking a VDI's objects: the copies its
    inode asks for, as many as there are zones to hold them."""
    nodes = list(nodes)
    zones = len({n.zone for n in nodes})
    _, logs = client.stat_cluster()
    epoch = max((log.epoch for log in logs), default=0)
    flags = logs[0].flags if logs else 0
    return ring_for(nodes, flags), max(1, min(hdr.nr_copies, zones)), epoch


def hyper_oids(client: SheepClient, hdr: InodeHeader) -> list[int]:
    """The B-tree leaves of a hyper volume: objects with copies like any
    other (C's dog leaves them out of its check; a lost copy of one loses
    the index of up to 2 TiB of data)."""
    if hdr.store_policy != HYPER_VOLUME:
        return []
    try:
        return HyperTree(client, hdr.vdi_id).leaf_oids()
    except ClientError:
        return []


def _data_check(holders: Holders, ring: PlacementRing, hdr: InodeHeader, copies: int,
                epoch: int) -> Callable[[int], None]:
    """How a data object of this VDI is checked: its copies compared, or
    its erasure-coded stripes' parity verified."""
    if not hdr.copy_policy:
        return lambda oid: check_object(holders, ring, oid, copies, epoch)
    from .check_ec import check_erasure_object

    d, p = ec.policy_dp(hdr.copy_policy)
    size = 1 << (hdr.block_size_shift or SD_DEFAULT_BLOCK_SIZE_SHIFT)
    return lambda oid: check_erasure_object(holders, ring, oid, d, p, size, epoch)


def check_vdi(client: SheepClient, nodes: Iterable[SdNode], inode: VdiInode) -> None:
    """Check and repair the inode and every data object of one VDI, with a
    progress bar on a terminal (progress.py)."""
    ring, copies, epoch = _placement(client, nodes, inode.header)
    hdr = inode.header
    meta = [vid_to_vdi_oid(hdr.vdi_id), *hyper_oids(client, hdr)]
    oids = [*meta, *(vid_to_data_oid(vid, idx) for idx, vid in inode.mapped())]
    holders = Holders()
    try:
        with Progress(f"Checking {hdr.name}", len(oids)) as bar:
            for i, oid in enumerate(oids[:len(meta)]):
                check_object(holders, ring, oid, copies, epoch)
                bar(i + 1)
            check_data = _data_check(holders, ring, hdr, copies, epoch)
            for i, oid in enumerate(oids[len(meta):], len(meta)):
                check_data(oid)
                bar(i + 1)
            bar.finish()
    finally:
        holders.close()
    click.echo(f"finish check&repair {hdr.name}")


def check_exist(client: SheepClient, nodes: Iterable[SdNode], inode: VdiInode) -> bool:
    """`vdi check -e`: only report objects missing on a node that should
    hold them. True when nothing is missing."""
    ring, copies, epoch = _placement(client, nodes, inode.header)
    hdr = inode.header
    oids = [vid_to_vdi_oid(hdr.vdi_id)] + hyper_oids(client, hdr)
    oids += [vid_to_data_oid(vid, idx) for idx, vid in inode.mapped()]
    holders = Holders()
    missing = 0
    try:
        for oid in oids:
            for node in ring.oid_to_nodes(oid, copies):
                if not _exists(holders, node, oid, epoch):
                    click.echo(f"[{node_addr(node.nid)}] oid {oid:016x} is missing.")
                    missing += 1
    finally:
        holders.close()
    if missing:
        click.echo(f"{hdr.name} lost {missing} object(s).")
        return False
    click.echo(f"{hdr.name} is fine, no object is missing.")
    return True
