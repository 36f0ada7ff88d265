"""Hyper volumes (store_policy 1) in the daemon: the places that read a
VDI's index must read a B-tree there, not data_vdi_id[] entries.

Why: a hyper volume's data_vdi_id[] area holds a B-tree (layout and
algorithm in sheepblk.proto.btree). Read as flat u32 entries, its header,
idx fields and leaf oids look like owners: a client's B-tree write would
seem to unmap objects (and free the wrong ones), a discard would zero a
word of the tree, recovery would find its objects unreferenced, and a
delete would read 2^32 entries. These functions do what Sheepdog's
daemon does for such a VDI (sheep/vdi.c create_vdi and delete_vdi_work,
sheep/ops.c local_discard_obj), through the gateway, for the call sites
in vdi_ops.py and local_ops.py to use.
"""

from __future__ import annotations

from typing import Protocol

from ..proto import InodeHeader, oid_to_vid, vid_to_data_oid, vid_to_vdi_oid
from ..proto.btree import INDEX_HEADER_SIZE, BTree, init_node, leaf_size, meta_size
from ..proto.constants import SD_INODE_DATA_INDEX
from ..proto.inode import DATA_VDI_ID_OFFSET, SD_INODE_DATA_INDEX_SIZE, SD_INODE_HEADER_SIZE

HYPER_VOLUME = 1
# struct sd_inode: name, tag, 5 u64, copy_policy, then store_policy.
STORE_POLICY_OFFSET = 2 * 256 + 5 * 8 + 1
# A leaf's first read: its header and, for most leaves, all its records.
LEAF_FIRST_READ = 64 << 10

assert InodeHeader(store_policy=0xAB).pack()[STORE_POLICY_OFFSET] == 0xAB


class ObjectIO(Protocol):
    """The part of server.gateway.Gateway used here."""

    async def read(self, oid: int, offset: int, buf: memoryview, *, copies: int = 0,
                   flags: int = 0) -> None: ...

    async def write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                    copies: int = 0) -> None: ...

    async def create_and_write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                               cow_oid: int = 0, copies: int = 0) -> None: ...

    async def remove(self, oid: int, *, copies: int = 0) -> None: ...


def new_root(store_policy: int) -> bytes:
    """What follows the header in a new VDI's inode body: for a hyper
    volume an empty depth-1 root (sd_inode_init), else nothing."""
    return bytes(init_node(1)) if store_policy == HYPER_VOLUME else b""


def store_policy_in(offset: int, data: memoryview | bytes) -> int | None:
    """The store_policy a write at `offset` carries, if it covers it."""
    if offset <= STORE_POLICY_OFFSET < offset + len(data):
        return data[STORE_POLICY_OFFSET - offset]
    return None


async def store_policy(gw: ObjectIO, vid: int, copies: int = 0) -> int:
    buf = memoryview(bytearray(1))
    await gw.read(vid_to_vdi_oid(vid), STORE_POLICY_OFFSET, buf, copies=copies)
    return buf[0]


async def is_hyper_write(gw: ObjectIO, oid: int, offset: int, data: memoryview,
                         copies: int = 0) -> bool:
    """Whether a client's write to inode `oid` lands in a hyper volume
    (then its data_vdi_id[] bytes are B-tree, not entries): by the
    store_policy the write carries, else the one stored."""
    carried = store_policy_in(offset, data)
    if carried is not None:
        return carried == HYPER_VOLUME
    return await store_policy(gw, oid_to_vid(oid), copies) == HYPER_VOLUME


async def _read(gw: ObjectIO, oid: int, offset: int, length: int, copies: int) -> bytearray:
    buf = bytearray(length)
    await gw.read(oid, offset, memoryview(buf), copies=copies)
    return buf


async def load_tree(gw: ObjectIO, vid: int, copies: int = 0) -> BTree:
    """The tree of hyper volume `vid` as its root says; leaves are fetched
    with `fetch_leaf` (the tree reads only the ones fetched)."""
    oid = vid_to_vdi_oid(vid)
    head = await _read(gw, oid, 0, SD_INODE_HEADER_SIZE + INDEX_HEADER_SIZE, copies)
    root = head[SD_INODE_HEADER_SIZE:]
    meta = meta_size(root)
    if meta > INDEX_HEADER_SIZE:
        root += await _read(gw, oid, DATA_VDI_ID_OFFSET + INDEX_HEADER_SIZE,
                            meta - INDEX_HEADER_SIZE, copies)
    counter = InodeHeader.unpack(head).btree_counter

    def unfetched(leaf: int) -> bytes:
        raise LookupError(f"B-tree leaf {leaf:016x} was not fetched")

    return BTree(vid, root, counter, unfetched)


async def fetch_leaf(gw: ObjectIO, tree: BTree, leaf: int, copies: int = 0) -> None:
    if not leaf or leaf in tree.nodes:
        return
    first = await _read(gw, leaf, 0, LEAF_FIRST_READ, copies)
    size = leaf_size(first)
    if size > len(first):
        first += await _read(gw, leaf, len(first), size - len(first), copies)
    tree.nodes[leaf] = first[:size]


async def hyper_owner(gw: ObjectIO, vid: int, idx: int, copies: int = 0) -> int:
    """sd_inode_get_vid on hyper volume `vid`."""
    tree = await load_tree(gw, vid, copies)
    await fetch_leaf(gw, tree, tree.leaf_for(idx), copies)
    return tree.get(idx)


async def index_owner(gw: ObjectIO, vid: int, idx: int, copies: int = 0) -> int:
    """The VDI that inode `vid` says owns its object idx, for either kind
    of index (0: none)."""
    if await store_policy(gw, vid, copies) == HYPER_VOLUME:
        return await hyper_owner(gw, vid, idx, copies)
    if not 0 <= idx < SD_INODE_DATA_INDEX:
        return 0
    raw = await _read(gw, vid_to_vdi_oid(vid), DATA_VDI_ID_OFFSET + 4 * idx, 4, copies)
    return int.from_bytes(raw, "little")


async def _perform(gw: ObjectIO, tree: BTree, idx: int, vid: int, copies: int) -> None:
    for w in tree.set(idx, vid):
        data = memoryview(w.data)
        if w.create:
            await gw.create_and_write(w.oid, w.offset, data, sync=True, copies=copies)
        else:
            await gw.write(w.oid, w.offset, data, sync=True, copies=copies)


async def discard(gw: ObjectIO, vid: int, idx: int, copies: int = 0) -> int:
    """local_discard_obj on a hyper volume: the record of object idx gets
    vdi_id 0 (it stays in the tree, as in C). Returns the owner it had
    (0: nothing to do); the caller frees the object as for a flat one."""
    tree = await load_tree(gw, vid, copies)
    await fetch_leaf(gw, tree, tree.leaf_for(idx), copies)
    owner = tree.get(idx)
    if owner:
        await _perform(gw, tree, idx, 0, copies)
    return owner


async def records(gw: ObjectIO, vid: int, copies: int = 0) -> tuple[BTree, list[tuple[int, int]]]:
    """Every (idx, vdi_id) record; a leaf that cannot be read is skipped
    (sd_inode_index_walk logs and goes on)."""
    tree = await load_tree(gw, vid, copies)
    for leaf in tree.leaf_oids():
        try:
            await fetch_leaf(gw, tree, leaf, copies)
        except Exception:  # noqa: BLE001 - as C: skip the unreadable leaf
            continue
    return tree, list(tree.walk((LookupError,)))


async def delete(gw: ObjectIO, vid: int, copies: int = 0) -> list[int]:
    """delete_vdi_work for a hyper volume: remove the data objects its
    records say it owns and its B-tree leaves (C leaves those behind),
    then zero its data_vdi_id[]. Returns the oids removed. The caller
    clears the name and size as for any VDI."""
    tree, recs = await records(gw, vid, copies)
    gone = []
    for oid in [vid_to_data_oid(vid, i) for i, v in recs if v == vid] + tree.leaf_oids():
        try:
            await gw.remove(oid, copies=copies)
            gone.append(oid)
        except Exception:  # noqa: BLE001 - already gone is fine
            pass
    await gw.write(vid_to_vdi_oid(vid), DATA_VDI_ID_OFFSET,
                   memoryview(bytes(SD_INODE_DATA_INDEX_SIZE)), sync=True, copies=copies)
    return gone
