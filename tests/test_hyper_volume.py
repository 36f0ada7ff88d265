"""Hyper volumes (`dog vdi create -y`, store_policy 1) against real sheep
processes: Sheepdog's functional test 079, then what our client does with
the B-tree in the inode (byte layout on the daemons, unmapping, the root
growing to depth 2).

The B-tree's own algorithm is tested without daemons in test_btree.py.
"""

from __future__ import annotations

import os
import re
import struct

import pytest
from conftest import SheepFactory, SheepProcess, run_dog, wait_for
from test_cluster_daemon import node_count, three

from sheepblk.client import HyperTree, SheepdogError, SparseIndex, Vdi, index_items, index_owner
from sheepblk.proto import Res, vid_to_data_oid, vid_to_vdi_oid
from sheepblk.proto.btree import (
    INODE_BTREE_MAGIC,
    MAX_INDEX,
    SD_INDEX,
    init_node,
    leaf_records,
    parse_header,
)
from sheepblk.proto.inode import DATA_VDI_ID_OFFSET
from sheepblk.proto.oid import vid_to_btree_oid

MiB = 1 << 20
PiB = 1 << 50
OBJ = 4 * MiB
TEST_VID = 0x7C2B25  # sd_hash_vdi("test"), as in 079.out


def dog(node: SheepProcess, *args: str, input: bytes | None = None) -> bytes:
    p = run_dog(node, *args, input=input, check=False)
    assert p.returncode == 0, (args, p.returncode, p.stderr.decode())
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    return p.stdout


def list_line(node: SheepProcess) -> str:
    """079.out's `vdi list` line, with the creation time masked as DATE."""
    (line,) = [ln for ln in dog(node, "vdi", "list").decode().splitlines()[1:]]
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "DATE", line)


def test_079_hyper_volume_write_read_and_node_loss(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory)
    node = nodes[0]
    dog(node, "vdi", "create", "test", "16P", "-y")
    with node.client() as c:  # an empty depth-1 root, as Sheepdog's daemon makes it
        assert _inode_root(c, TEST_VID, 8) == init_node(1)
        assert c.read_inode_header(TEST_VID).block_size_shift == 22
    assert list_line(node) == ("  test         0   16 PB  0.0 MB  0.0 MB DATE   7c2b25"
                               "      3                22")
    blocks = [os.urandom(2 * MiB) for _ in range(16)]
    for i, block in enumerate(blocks):
        dog(node, "vdi", "write", "test", f"{i}P", "2M", input=block)
    for i, block in enumerate(blocks):
        assert dog(nodes[i % 3], "vdi", "read", "test", f"{i}P", "2M") == block, i
    assert list_line(node) == ("  test         0   16 PB   64 MB  0.0 MB DATE   7c2b25"
                               "      3                22")
    raw = dog(node, "vdi", "list", "-r").decode().split()
    assert raw[4:6] == [str(16 * OBJ), "0"]  # used, shared

    # Our client maps the same objects, and reads the same bytes.
    with node.client() as c, Vdi(c, "test", writable=False) as v:
        assert isinstance(v.index, SparseIndex)
        assert sorted(v.index.items()) == [(i << 28, TEST_VID) for i in range(16)]
        assert v.allocated_objects() == 16
        for i, block in enumerate(blocks):
            assert v.pread(2 * MiB, i * PiB) == block
        assert v.pread(4096, 3 * PiB + 2 * MiB) == bytes(4096)  # the rest of the object
        assert v.pread(4096, 3 * PiB + OBJ) == bytes(4096)  # an unmapped object

    # The commands that walk the index.
    omap = dog(node, "vdi", "object", "map", "test").decode().splitlines()
    assert omap == ["Index       VID"] + [f"{i << 28:08d}   7c2b25" for i in range(16)]
    loc = dog(node, "vdi", "object", "location", "-i", str(15 << 28), "test").decode()
    assert f"{vid_to_data_oid(TEST_VID, 15 << 28):x}" in loc
    assert loc.count("has the object") == 3
    assert "finish check&repair test" in dog(node, "vdi", "check", "test").decode()
    assert "no object is missing" in dog(node, "vdi", "check", "-e", "test").decode()
    owners = dog(node, "vdi", "list", "-r", "-o", f"{vid_to_data_oid(TEST_VID, 1 << 28):x}")
    assert owners.split()[1] == b"test"

    # 079's second half: a node dies, the other two still serve the data.
    nodes[2].kill9()
    wait_for(lambda: node_count(nodes[0]) == 2, "the node to leave")
    for i in (0, 7, 15):
        assert dog(node, "vdi", "read", "test", f"{i}P", "2M") == blocks[i]
    assert "64 MB" in list_line(nodes[1])


def _inode_root(c, vid: int, length: int) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(c.read_obj(vid_to_vdi_oid(vid), length, DATA_VDI_ID_OFFSET))


def test_btree_bytes_in_the_inode_and_unmapping(one_node: SheepProcess) -> None:
    """The daemon stores what Sheepdog's clients would: a depth-1 root of
    sorted (idx, vid) records, the header's btree_counter untouched; a
    trimmed object keeps its record with vdi_id 0 and is removed."""
    with one_node.client() as c:
        vid = c.create_vdi("h", 1 << 40, store_policy=1)
        order = [9, 2, 700, 0, 5]
        with Vdi(c, "h") as v:
            for idx in order:
                v.pwrite(struct.pack("<Q", idx) * 512, idx * OBJ + 4096)
        root = _inode_root(c, vid, 8 + 8 * len(order))
        assert parse_header(root) == (INODE_BTREE_MAGIC, 1, len(order))
        assert leaf_records(root) == [(i, vid) for i in sorted(order)]
        assert c.read_inode_header(vid).btree_counter == 0
        with Vdi(c, "h") as v:  # reopened: the index comes from the daemon
            for idx in order:
                assert v.pread(8, idx * OBJ + 4096) == struct.pack("<Q", idx)
            v.zero(OBJ, 5 * OBJ)
            assert v.index[5] == 0 and v.allocated_objects() == 4
        assert leaf_records(_inode_root(c, vid, 8 + 8 * len(order)))[2] == (5, 0)
        with pytest.raises(SheepdogError) as e:
            c.read_obj(vid_to_data_oid(vid, 5), 8)
        assert e.value.result == Res.NO_OBJ
        with Vdi(c, "h") as v:
            assert v.pread(8, 5 * OBJ + 4096) == bytes(8)
            v.pwrite(b"again", 5 * OBJ)  # the record is reused
            assert v.pread(5, 5 * OBJ) == b"again"
        assert leaf_records(_inode_root(c, vid, 8 + 8 * len(order)))[2] == (5, vid)


def test_root_grows_to_depth_two_through_the_client(one_node: SheepProcess) -> None:
    """A full depth-1 root (MAX_INDEX records, written here in one go as a
    long-lived volume would have them) splits into two VDI_BTREE leaves on
    the next allocation, and every record stays reachable."""
    with one_node.client() as c:
        vid = c.create_vdi("big", 16 * PiB, store_policy=1)
        # Records for the even objects 0 .. 2*(MAX_INDEX-1), as if written.
        full = init_node(1)
        struct.pack_into("<I", full, 4, MAX_INDEX)
        full += b"".join(SD_INDEX.pack(2 * i, vid) for i in range(MAX_INDEX))
        c.write_obj(vid_to_vdi_oid(vid), bytes(full), DATA_VDI_ID_OFFSET)
        with Vdi(c, "big") as v:
            assert len(v.index) == MAX_INDEX
            v.pwrite(b"odd", 3 * OBJ)  # a new record in the middle: the root splits
            v.pwrite(b"last", ((1 << 32) - 1) * OBJ)  # past every record: the last leaf
        left, right = vid_to_btree_oid(vid, 0), vid_to_btree_oid(vid, 1)
        root = _inode_root(c, vid, 8 + 16 * 2)
        assert parse_header(root) == (INODE_BTREE_MAGIC, 2, 2)
        assert struct.unpack_from("<I", root, 8)[0] == 2 * (MAX_INDEX // 2 - 1)
        assert struct.unpack_from("<Q", root, 16)[0] == left
        assert struct.unpack_from("<I", root, 24)[0] == (1 << 32) - 1
        assert struct.unpack_from("<Q", root, 32)[0] == right
        assert c.read_inode_header(vid).btree_counter == 2
        t = HyperTree(c, vid)
        assert t.leaf_oids() == [left, right]
        records = dict(t.records())
        assert len(records) == MAX_INDEX + 2
        assert all(records[2 * i] == vid for i in range(MAX_INDEX))
        with Vdi(c, "big", writable=False) as v:
            assert v.pread(3, 3 * OBJ) == b"odd"
            assert v.pread(4, ((1 << 32) - 1) * OBJ) == b"last"
            assert v.index[2 * 1000] == vid and v.index[2 * 1000 + 1] == 0
        stats = dog(one_node, "vdi", "list", "-r", "big").decode().split()
        assert int(stats[4]) == (MAX_INDEX + 2) * OBJ


def test_sparse_index_reads_like_a_flat_one() -> None:
    index = SparseIndex([(3, 7), (1 << 31, 9)], nr_objects=1 << 32)
    assert index[3] == 7 and index[4] == 0 and 4 not in index
    assert index[:5] == [0, 0, 0, 7, 0]
    assert index[(1 << 31) - 1:(1 << 31) + 1] == [0, 9]
    assert list(index_items(index)) == [(3, 7), (1 << 31, 9)]
    assert list(index_items([0, 5, 0, 6])) == [(1, 5), (3, 6)]
    assert index_owner(index, 1 << 31) == 9 and index_owner([0, 5], 9) == 0


def test_a_corrupt_tree_fails_that_volume_alone(one_node: SheepProcess) -> None:
    """C's tools panic on a B-tree of depth 3; ours skip it in lists and
    refuse its I/O with one line."""
    with one_node.client() as c:
        c.create_vdi("ok", 1 << 30)
        vid = c.create_vdi("bad", 1 << 40, store_policy=1)
        c.write_obj(vid_to_vdi_oid(vid), init_node(3), DATA_VDI_ID_OFFSET)
    listed = dog(one_node, "vdi", "list", "-r").decode().split("\n")
    assert [row.split()[1] for row in listed if row] == ["ok"]
    p = run_dog(one_node, "vdi", "read", "bad", "0", "4096", check=False)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert b"depth 3" in p.stderr


# ---- the daemon's side (sheepblk/server/hyper.py) ----


def _objects(node: SheepProcess) -> set[int]:
    return {int(p.name, 16) for p in (node.store / "obj").iterdir() if len(p.name) == 16}


def test_new_hyper_volume_has_a_root_from_the_daemon(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        vid = c.create_vdi("h", 16 * PiB, store_policy=1)
        assert _inode_root(c, vid, 8) == init_node(1)


def test_trim_frees_only_its_own_object(one_node: SheepProcess) -> None:
    """The daemon must not read the B-tree write of a trim as flat
    data_vdi_id[] entries (it freed object 3 + 2 * position)."""
    with one_node.client() as c:
        vid = c.create_vdi("h", 1 << 40, store_policy=1)
        with Vdi(c, "h") as v:
            for idx in range(12):
                v.pwrite(bytes([idx + 1]) * 512, idx * OBJ)
            v.zero(OBJ, 2 * OBJ)
        assert vid_to_data_oid(vid, 2) not in _objects(one_node)
        with Vdi(c, "h") as v:
            for idx in range(12):
                assert v.pread(1, idx * OBJ) == (b"\0" if idx == 2 else bytes([idx + 1]))


def test_discard_op_on_a_hyper_volume(one_node: SheepProcess) -> None:
    """SD_OP_DISCARD_OBJ (C's sheepfs, QEMU) unmaps the record in the tree."""
    with one_node.client() as c:
        vid = c.create_vdi("h", 16 * PiB, store_policy=1)
        with Vdi(c, "h") as v:
            for idx in (0, 1 << 28, 2 << 28):
                v.pwrite(b"x" * 512, idx * OBJ)
        c.discard_obj(vid_to_data_oid(vid, 1 << 28))
        assert dict(HyperTree(c, vid).records()) == {0: vid, 1 << 28: 0, 2 << 28: vid}
        assert vid_to_data_oid(vid, 1 << 28) not in _objects(one_node)


def test_delete_frees_a_hyper_volume(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        before = _objects(one_node)
        vid = c.create_vdi("h", 16 * PiB, store_policy=1)
        with Vdi(c, "h") as v:
            for idx in (0, 1, 1 << 30, 3 << 30, (1 << 32) - 1):
                v.pwrite(b"y" * 512, idx * OBJ)
    dog(one_node, "vdi", "delete", "h")
    assert _objects(one_node) - before == {vid_to_vdi_oid(vid)}
