"""sheepblk.server.hyper: the daemon's reads and changes of a hyper
volume's index, against objects in memory behind a gateway's interface."""

from __future__ import annotations

import struct
from functools import partial

import pytest
import trio

from sheepblk.proto import InodeHeader, btree, get_objsize, vid_to_data_oid, vid_to_vdi_oid
from sheepblk.proto.btree import BTree, init_node, parse_header
from sheepblk.proto.inode import DATA_VDI_ID_OFFSET, SD_INODE_HEADER_SIZE
from sheepblk.server import hyper

VID = 0x7C2B25
FLAT = 0x123456


class NoObject(Exception):
    pass


class FakeGateway:
    """Objects in memory, sized as the daemon sizes them."""

    def __init__(self) -> None:
        self.objs: dict[int, bytearray] = {}
        self.removed: list[int] = []

    async def read(self, oid: int, offset: int, buf: memoryview, *, copies: int = 0,
                   flags: int = 0) -> None:
        if oid not in self.objs:
            raise NoObject(hex(oid))
        buf[:] = self.objs[oid][offset:offset + len(buf)]

    async def write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                    copies: int = 0) -> None:
        if oid not in self.objs:
            raise NoObject(hex(oid))
        assert offset + len(data) <= len(self.objs[oid])
        self.objs[oid][offset:offset + len(data)] = data

    async def create_and_write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                               cow_oid: int = 0, copies: int = 0) -> None:
        self.objs[oid] = bytearray(get_objsize(oid))
        await self.write(oid, offset, data, sync=sync, copies=copies)

    async def remove(self, oid: int, *, copies: int = 0) -> None:
        if self.objs.pop(oid, None) is None:
            raise NoObject(hex(oid))
        self.removed.append(oid)


def make_inode(gw: FakeGateway, vid: int, store_policy: int) -> None:
    head = InodeHeader(name="v", vdi_id=vid, store_policy=store_policy, nr_copies=3).pack()
    trio.run(partial(gw.create_and_write, vid_to_vdi_oid(vid), 0,
                     memoryview(head + hyper.new_root(store_policy)), sync=True))


def fill(gw: FakeGateway, records: dict[int, int]) -> BTree:
    """Write records into VID's tree as a client would, and create the
    data objects VID owns."""
    ino = gw.objs[vid_to_vdi_oid(VID)]
    root = bytearray(ino[SD_INODE_HEADER_SIZE:SD_INODE_HEADER_SIZE + 8])
    tree = BTree(VID, root, 0, lambda oid: bytes(gw.objs[oid]))
    for idx, vid in records.items():
        for w in tree.set(idx, vid):
            if w.create:
                gw.objs[w.oid] = bytearray(get_objsize(w.oid))
            gw.objs[w.oid][w.offset:w.offset + len(w.data)] = w.data
        if vid == VID:
            gw.objs[vid_to_data_oid(VID, idx)] = bytearray(b"data")
    return tree


@pytest.fixture
def small_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(btree, "MAX_INDEX", 63)
    monkeypatch.setattr(btree, "MAX_INDIRECT_IDX", 31)


@pytest.fixture
def gw(small_nodes: None) -> FakeGateway:
    gw = FakeGateway()
    make_inode(gw, VID, 1)
    make_inode(gw, FLAT, 0)
    return gw


RECORDS = {i * 1000: VID for i in range(400)} | {7: 0x42, (1 << 32) - 1: VID}


def test_a_new_hyper_inode_has_an_empty_root(gw: FakeGateway) -> None:
    ino = gw.objs[vid_to_vdi_oid(VID)]
    assert parse_header(ino[DATA_VDI_ID_OFFSET:]) == (0x6274, 1, 0)
    assert hyper.new_root(1) == init_node(1) and hyper.new_root(0) == b""


def test_hyper_writes_are_told_apart(gw: FakeGateway) -> None:
    whole = memoryview(InodeHeader(store_policy=1).pack() + bytes(8))
    flat = memoryview(InodeHeader(store_policy=0).pack() + bytes(8))
    assert trio.run(hyper.is_hyper_write, gw, vid_to_vdi_oid(FLAT), 0, whole)
    assert not trio.run(hyper.is_hyper_write, gw, vid_to_vdi_oid(VID), 0, flat)
    tail = memoryview(bytes(8))  # no header in the write: what is stored decides
    assert trio.run(hyper.is_hyper_write, gw, vid_to_vdi_oid(VID), DATA_VDI_ID_OFFSET, tail)
    assert not trio.run(hyper.is_hyper_write, gw, vid_to_vdi_oid(FLAT), DATA_VDI_ID_OFFSET, tail)


def test_owners_of_either_kind_of_index(gw: FakeGateway) -> None:
    tree = fill(gw, RECORDS)
    assert tree.depth == 2 and len(tree.leaf_oids()) > 5
    for idx in (0, 7, 399_000, (1 << 32) - 1, 5, 1 << 31):
        assert trio.run(hyper.index_owner, gw, VID, idx) == RECORDS.get(idx, 0), idx
    flat = gw.objs[vid_to_vdi_oid(FLAT)]
    struct.pack_into("<I", flat, DATA_VDI_ID_OFFSET + 4 * 3, FLAT)
    assert trio.run(hyper.index_owner, gw, FLAT, 3) == FLAT
    assert trio.run(hyper.index_owner, gw, FLAT, 4) == 0
    assert trio.run(hyper.index_owner, gw, FLAT, 1 << 30) == 0  # past a flat index


def test_discard_unmaps_one_record(gw: FakeGateway) -> None:
    fill(gw, RECORDS)
    assert trio.run(hyper.discard, gw, VID, 5000) == VID
    assert trio.run(hyper.index_owner, gw, VID, 5000) == 0
    assert trio.run(hyper.discard, gw, VID, 5000) == 0  # nothing left to do
    assert trio.run(hyper.discard, gw, VID, 5001) == 0
    _, recs = trio.run(hyper.records, gw, VID)
    assert dict(recs) == RECORDS | {5000: 0}


def test_delete_removes_own_objects_and_leaves(gw: FakeGateway) -> None:
    tree = fill(gw, RECORDS)
    leaves = tree.leaf_oids()
    gone = trio.run(hyper.delete, gw, VID)
    own = {vid_to_data_oid(VID, i) for i, v in RECORDS.items() if v == VID}
    assert set(gone) == own | set(leaves)
    assert vid_to_data_oid(0x42, 7) not in gone
    root = gw.objs[vid_to_vdi_oid(VID)][DATA_VDI_ID_OFFSET:]
    assert not any(root)
    assert trio.run(hyper.records, gw, VID)[1] == []
