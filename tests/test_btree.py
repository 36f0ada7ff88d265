"""sheepblk.proto.btree, the hyper volume index, with objects in memory.

The golden digests below are of the objects Sheepdog 1.0.1's own
lib/sd_inode.c leaves after the same sequences: it was compiled outside
this repository with an in-memory writer and reader, and driven as dog's
`vdi write` drives it (sd_inode_set_vid, then sd_inode_write_vid, on an
inode made as sheep's create_vdi makes it). The small-node sequences
used SD_INODE_DATA_INDEX = 2^10 (4 KiB nodes: 511 leaf records, 255
root records); the tests shrink MAX_INDEX and MAX_INDIRECT_IDX to match.
None of them splits a leaf in the middle: there C files the new leaf
wrongly (see the module docstring) and the bytes differ by design.
"""

from __future__ import annotations

import hashlib
import random
import struct
from bisect import bisect_left
from collections.abc import Iterable

import pytest

from sheepblk.proto import InodeHeader, btree, vid_to_vdi_oid
from sheepblk.proto.btree import (
    BTREE_COUNTER_OFFSET,
    INODE_BTREE_MAGIC,
    BTree,
    BTreeError,
    NodeWrite,
    indirect_records,
    init_node,
    leaf_records,
    meta_size,
    parse_header,
    search,
)
from sheepblk.proto.inode import DATA_VDI_ID_OFFSET, SD_INODE_HEADER_SIZE
from sheepblk.proto.oid import VDI_BTREE_BIT, vid_to_btree_oid

VID = 0x7C2B25
H = SD_INODE_HEADER_SIZE


class Store:
    """Objects in memory with the daemon's create semantics (a created
    object is zeros of its size, then the payload)."""

    def __init__(self, node_size: int = btree.NODE_SIZE, vid: int = VID,
                 init: bool = True) -> None:
        self.node_size = node_size
        self.vid = vid
        self.inode = vid_to_vdi_oid(vid)
        head = InodeHeader(name="test", vdi_id=vid, store_policy=1, nr_copies=3,
                           block_size_shift=0).pack()
        self.objs = {self.inode: bytearray(head + bytes(node_size))}
        if init:  # as sheep's create_vdi: sd_inode_init(data_vdi_id, 1)
            self.objs[self.inode][H:H + 8] = init_node(1)

    def apply(self, writes: Iterable[NodeWrite]) -> None:
        for w in writes:
            if w.create:
                self.objs[w.oid] = bytearray(self.node_size)
            assert w.offset + len(w.data) <= len(self.objs[w.oid])
            self.objs[w.oid][w.offset:w.offset + len(w.data)] = w.data

    def tree(self) -> BTree:
        """A tree read from the objects, as a client opening the VDI."""
        ino = self.objs[self.inode]
        root = bytearray(ino[H:H + meta_size(ino[H:])])
        counter = InodeHeader.unpack(ino).btree_counter
        return BTree(self.vid, root, counter, lambda oid: bytes(self.objs[oid]),
                     lambda a, b: bytes(ino[H + a:H + b]))

    def digest(self) -> str:
        h = hashlib.sha256()
        for oid in sorted(self.objs):
            h.update(oid.to_bytes(8, "little"))
            h.update(self.objs[oid])
        return h.hexdigest()


def run(store: Store, ops: Iterable[tuple[int, int]]) -> BTree:
    tree = store.tree()
    for idx, vid in ops:
        store.apply(tree.set(idx, vid))
    return tree


@pytest.fixture
def small_nodes(monkeypatch: pytest.MonkeyPatch) -> int:
    """4 KiB nodes, as Sheepdog built with SD_INODE_DATA_INDEX = 2^10."""
    size = 4096
    monkeypatch.setattr(btree, "MAX_INDEX", (size - 8) // 8)
    monkeypatch.setattr(btree, "MAX_INDIRECT_IDX", (size - 8) // 16)
    return size


def check_shape(store: Store, want: dict[int, int]) -> None:
    """Every record reachable by lookup and by the walk, in order; at
    depth 2, each root record keyed by its leaf's largest idx."""
    tree = store.tree()
    assert dict(tree.walk()) == want
    assert [i for i, _ in tree.walk()] == sorted(want)
    for idx, vid in want.items():
        assert tree.get(idx) == vid, idx
    if tree.depth == 2:
        keys = [k for k, _ in indirect_records(tree.root)]
        assert keys == sorted(keys)
        for key, oid in indirect_records(tree.root):
            assert leaf_records(tree.node(oid))[-1][0] == key


# ---- layout ----

def test_layout_is_sheepdogs() -> None:
    assert (btree.INDEX_HEADER_SIZE, btree.SD_INDEX_SIZE, btree.SD_INDIRECT_IDX_SIZE) == (8, 8, 16)
    assert btree.NODE_SIZE == 4 << 20
    assert (btree.MAX_INDEX, btree.MAX_INDIRECT_IDX) == (524287, 262143)
    assert INODE_BTREE_MAGIC == 0x6274
    assert init_node(1) == bytes.fromhex("7462 0100 00000000")
    assert init_node(2) == bytes.fromhex("7462 0200 00000000")
    # btree_counter: the u32 after parent_vdi_id, first of the old children.
    assert BTREE_COUNTER_OFFSET == 568
    assert struct.unpack_from("<I", InodeHeader(btree_counter=7).pack(), 568)[0] == 7
    assert vid_to_btree_oid(VID, 5) == (VID << 32) | VDI_BTREE_BIT | 5 == 0x107C2B2500000005
    # A depth-1 root: header then {u32 idx, u32 vdi_id} records.
    store = Store()
    run(store, [(9, VID), (2, 0x11)])
    root = store.objs[store.inode][H:H + 24]
    assert root == bytes.fromhex("7462 0100 02000000" "02000000 11000000" "09000000 252b7c00")
    assert parse_header(root) == (INODE_BTREE_MAGIC, 1, 2)
    assert meta_size(root) == 24
    # A depth-2 root: {u32 idx, 4 bytes padding, u64 oid} records.
    fake = bytearray(init_node(2)) + bytes(32)
    struct.pack_into("<IxxxxQ", fake, 8, 100, 0x1122334455667788)
    struct.pack_into("<I", fake, 4, 1)
    assert indirect_records(fake) == [(100, 0x1122334455667788)]
    assert meta_size(fake) == 24
    # What sd_inode_write writes: header (counter set), then the root in use.
    meta = btree.inode_meta(store.objs[store.inode][:H], root, 3)
    assert len(meta) == H + 24 and meta[H:] == root
    assert InodeHeader.unpack(meta).btree_counter == 3


def test_search_is_nbsearch() -> None:
    node = init_node(1)
    assert search(node, 5) == 0
    keys = [3, 8, 20, 21, 40]
    for k in keys:
        node += struct.pack("<II", k, VID)
    struct.pack_into("<I", node, 4, len(keys))
    for probe in range(0, 45):
        assert search(node, probe) == bisect_left(keys, probe), probe


def test_an_uninitialised_root_is_empty() -> None:
    """A hyper volume whose inode has no tree yet (data_vdi_id[0] == 0)
    reads as all holes, and its first write makes the root."""
    store = Store(init=False)
    tree = store.tree()
    assert not tree.initialized and tree.get(0) == 0 and list(tree.walk()) == []
    store.apply(tree.set(4, VID))
    assert parse_header(store.objs[store.inode][H:]) == (INODE_BTREE_MAGIC, 1, 1)
    assert store.tree().get(4) == VID


def test_corrupt_trees_are_refused() -> None:
    store = Store()
    store.objs[store.inode][H:H + 2] = b"xx"
    with pytest.raises(BTreeError):
        store.tree().set(1, VID)
    root = bytearray(init_node(3))
    with pytest.raises(BTreeError):
        meta_size(root)
    tree = BTree(VID, root, 0, lambda oid: b"")
    with pytest.raises(BTreeError):
        list(tree.walk())
    assert tree.get(1) == 0


# ---- against Sheepdog's own bytes ----

def _seq() -> list[tuple[int, int]]:
    return [(i, VID) for i in range(3000)]


def _updates() -> list[tuple[int, int]]:
    return (_seq() + [(i, 0) for i in range(0, 3000, 7)]
            + [(i, 0x123) for i in range(5, 3000, 11)])


def _random() -> list[tuple[int, int]]:
    rnd = random.Random(1)
    return [(rnd.randrange(1 << 32), VID) for _ in range(400)]


@pytest.mark.parametrize("ops, init, nr_objects, digest", [
    (_seq, True, 8, "c75e5f97159fb2497c068915ec5da7cc5b4b6708d6afb41966e911f76ae32367"),
    (_seq, False, 8, "c75e5f97159fb2497c068915ec5da7cc5b4b6708d6afb41966e911f76ae32367"),
    (_updates, True, 8, "f672f2cdc555f7b7023af613e5033085fc03571164ad7a210fea4786e48e3669"),
    (_random, True, 1, "88bf01647b4f334b49bd441678edabcf4f33f2dfbac1d942c6998a970bd820e8"),
], ids=["sequential-depth2", "sequential-uninitialised-root", "updates-and-unmaps",
        "random-depth1"])
def test_same_bytes_as_sheepdog_small_nodes(small_nodes: int, ops, init: bool,  # type: ignore[no-untyped-def]
                                            nr_objects: int, digest: str) -> None:
    store = Store(small_nodes, init=init)
    run(store, ops())
    assert len(store.objs) == nr_objects
    assert store.digest() == digest


def test_same_bytes_as_sheepdog_079() -> None:
    """Sheepdog's test 079 writes one object at each petabyte of 16P."""
    store = Store()
    run(store, [(i << 28, VID) for i in range(16)])
    assert store.digest() == "44f4751f95dc3b6344ca654ca6c36a54a4d9c90ab5fd524702807bbc8a36d5a5"


# ---- growth: depth 2, leaf splits ----

def test_depth_two_new_leaf_and_leaf_split_at_full_size() -> None:
    """Real node sizes: MAX_INDEX records fill the root; the next one moves
    them into two leaves; appending fills the last leaf, then starts a
    third; a record inside the full second leaf splits it."""
    half = btree.MAX_INDEX // 2  # records the root split leaves on the left
    n = btree.MAX_INDEX + 1 + (btree.MAX_INDEX - (btree.MAX_INDEX - half + 1)) + 1
    store = Store()
    tree = store.tree()
    want: dict[int, int] = {}
    for i in range(n):  # even idx only: the odd ones are gaps to fill later
        store.apply(tree.set(2 * i, VID))
        want[2 * i] = VID
        if i == btree.MAX_INDEX - 1:
            assert tree.depth == 1 and tree.counter == 0
        if i == btree.MAX_INDEX:
            assert tree.depth == 2 and tree.counter == 2
            left, right = tree.leaf_oids()
            assert [left, right] == [vid_to_btree_oid(VID, 0), vid_to_btree_oid(VID, 1)]
            assert parse_header(tree.node(left)).entries == half
    assert tree.counter == 3 and len(tree.leaf_oids()) == 3  # the last one was new
    assert parse_header(tree.node(right)).entries == btree.MAX_INDEX
    inside = 2 * (half + 1000) + 1  # odd: a gap inside the full second leaf
    store.apply(tree.set(inside, VID ^ 1))
    want[inside] = VID ^ 1
    assert tree.counter == 4 and len(tree.leaf_oids()) == 4
    tree = store.tree()
    assert len(tree.leaf_oids()) == 4
    assert dict(tree.walk()) == want
    for idx, vid in want.items():
        assert tree.get(idx) == vid
    assert tree.get(inside + 2) == 0
    for key, oid in indirect_records(tree.root):
        assert leaf_records(tree.node(oid))[-1][0] == key


def test_random_growth_with_small_nodes(small_nodes: int) -> None:
    """Inserts anywhere, updates and unmaps: many leaf splits and new
    leaves; the objects always read back as the same tree."""
    rnd = random.Random(7)
    store = Store(small_nodes)
    tree = store.tree()
    want: dict[int, int] = {}
    for step in range(6000):
        if want and rnd.random() < 0.2:
            idx = rnd.choice(list(want))
            vid = rnd.choice([0, VID, 0x42])
        else:
            idx = rnd.randrange(1 << 20) if rnd.random() < 0.8 else (1 << 32) - 1 - step
            vid = VID
        want[idx] = vid
        store.apply(tree.set(idx, vid))
        if step % 1500 == 0:
            check_shape(store, want)
    assert tree.depth == 2 and len(tree.leaf_oids()) > 10
    check_shape(store, want)


def test_a_full_tree_is_refused(small_nodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(btree, "MAX_INDIRECT_IDX", 3)
    store = Store(small_nodes)
    tree = store.tree()
    n = 0
    with pytest.raises(BTreeError, match="full"):
        while True:
            store.apply(tree.set(n, VID))
            n += 1
    assert n == btree.MAX_INDEX // 2 + 2 * btree.MAX_INDEX  # left half, two full leaves
    check_shape(store, {i: VID for i in range(n)})


def test_every_prefix_of_a_changes_writes_is_a_readable_tree(small_nodes: int) -> None:
    """The writes come in an order that survives a stop after any of them:
    what was mapped before stays mapped (a split's moved records included)."""
    rnd = random.Random(3)
    store = Store(small_nodes)
    tree = store.tree()
    want: dict[int, int] = {}
    for step in range(2500):
        idx = rnd.randrange(1 << 16)
        writes = tree.set(idx, VID)
        if len(writes) > 1 or step % 50 == 0:
            for cut in range(len(writes)):
                partial = Store(small_nodes)
                partial.objs = {k: bytearray(v) for k, v in store.objs.items()}
                partial.apply(writes[:cut])
                got = partial.tree()
                for k, v in want.items():
                    assert got.get(k) == v, (step, cut, k)
        store.apply(writes)
        want[idx] = VID
    assert tree.depth == 2
    check_shape(store, want)


def test_root_writes_carry_the_inode_offset() -> None:
    store = Store()
    tree = store.tree()
    (write,) = [w for w in tree.set(0, VID) if w.offset == DATA_VDI_ID_OFFSET]
    assert write.oid == store.inode and write.data == init_node(1)[:4] + b"\x01\0\0\0"
