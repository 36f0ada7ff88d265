"""Reading VDI inodes the way dog's parse_vdi() walks them.

Why a module of its own: `vdi list`, `tree`, `graph`, `node info`, `lock
list` and `cluster check` all walk every VDI in vid order, skipping the
deleted ones, and some need the data_vdi_id[] index too (used/shared sizes
are counted from it, as dog does, rather than trusted from anywhere else).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sheepblk.client import ClientError, SheepClient, index_items, index_owner
from sheepblk.client.hyper import Index
from sheepblk.proto import (
    InodeHeader,
)


@dataclass
class VdiInode:
    """An inode header and (when asked for) its data_vdi_id[] entries: a
    list, or a SparseIndex for a hyper volume (walk it with `mapped`)."""

    header: InodeHeader
    index: Index

    @property
    def vid(self) -> int:
        return self.header.vdi_id

    def owner(self, idx: int) -> int:
        """The VDI owning object idx, 0 for a hole (any idx)."""
        return index_owner(self.index, idx)

    def mapped(self) -> list[tuple[int, int]]:
        """(idx, owner) of every mapped object, in idx order."""
        return list(index_items(self.index))

    def stat(self) -> tuple[int, int]:
        """(own objects, objects shared copy-on-write) like sd_inode_stat."""
        vid = self.header.vdi_id
        mine = cow = 0
        for _, v in index_items(self.index):
            if v == vid:
                mine += 1
            else:
                cow += 1
        return mine, cow


def read_inode(client: SheepClient, vid: int, with_index: bool = True) -> VdiInode:
    hdr = client.read_inode_header(vid)
    return VdiInode(hdr, client.read_index(hdr) if with_index else [])


def walk_vdis(client: SheepClient, with_index: bool = False) -> Iterator[VdiInode]:
    """Every live VDI and snapshot in vid order. SheepdogError from
    READ_VDIS propagates (the caller words it); an inode that cannot be
    read is skipped, as dog does."""
    for vid in client.live_vdi_ids():
        try:
            inode = read_inode(client, vid, with_index)
        except ClientError:
            continue
        if not inode.header.name:
            continue
        yield inode
