"""Objects are freed when no inode maps them any more, whichever client
deletes: Sheepdog's C dog (zeroes data_vdi_id[] with WRITE_OBJ, then
DEL_VDI), QEMU (discard by zeroing one entry) or our dog (DEL_VDI alone).
Shared objects stay while a snapshot or clone still maps them."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import SheepProcess

from sheepblk.client import SheepClient, Vdi
from sheepblk.proto import data_vid_offset, vid_to_data_oid, vid_to_vdi_oid

MIB = 1 << 20
OBJ = 4 * MIB


def data_objects(node: SheepProcess) -> set[int]:
    objs = node.store / "obj"
    return {int(p.name, 16) for p in objs.iterdir()
            if p.is_file() and not int(p.name, 16) >> 63}


def cdog_delete(c: SheepClient, name: str, tag: str = "") -> None:
    """What C dog's do_vdi_delete sends: the index zeroed first (one write
    of the filled range), then DEL_VDI."""
    vid = c.lookup_vdi(name, tag).vid
    hdr = c.read_inode_header(vid)
    n = hdr.nr_objects
    c.write_obj(vid_to_vdi_oid(vid), bytes(4 * n), data_vid_offset(0))
    c.delete_vdi(name, tag)


def write(c: SheepClient, name: str, offset: int, data: bytes) -> None:
    with Vdi(c, name, lock=True) as v:
        v.pwrite(data, offset)


def read(c: SheepClient, name: str, length: int, tag: str = "") -> bytes:
    with Vdi(c, name, tag=tag, writable=False) as v:
        return bytes(v.pread(length, 0))


def test_cdog_style_delete_frees_only_unshared(one_node: SheepProcess, tmp_path: Path) -> None:
    with one_node.client() as c:
        base = os.urandom(3 * OBJ)
        c.create_vdi("A", 3 * OBJ)
        write(c, "A", 0, base)
        a1 = c.lookup_vdi("A").vid
        c.write_obj(vid_to_vdi_oid(a1), b"s1".ljust(256, b"\0"), 256)  # the tag, as dog does
        c.create_vdi("A", 0, snapshot=True)
        a2 = c.lookup_vdi("A").vid
        write(c, "A", OBJ, b"x" * OBJ)  # COW of object 1
        c.create_vdi("B", 3 * OBJ, base_vid=a1)
        b = c.lookup_vdi("B").vid
        write(c, "B", 2 * OBJ, b"y" * OBJ)  # COW of object 2
        assert data_objects(one_node) == {vid_to_data_oid(a1, i) for i in range(3)} | {
            vid_to_data_oid(a2, 1), vid_to_data_oid(b, 2)}

        cdog_delete(c, "A", "s1")  # the snapshot: everything it owns is still shared
        assert len(data_objects(one_node)) == 5
        assert read(c, "A", 3 * OBJ) == base[:OBJ] + b"x" * OBJ + base[2 * OBJ:]
        assert read(c, "B", 3 * OBJ) == base[:2 * OBJ] + b"y" * OBJ

        cdog_delete(c, "A")  # a2's own object goes, and a1's object 2 that only A mapped
        assert data_objects(one_node) == {vid_to_data_oid(a1, 0), vid_to_data_oid(a1, 1),
                                          vid_to_data_oid(b, 2)}
        assert read(c, "B", 3 * OBJ) == base[:2 * OBJ] + b"y" * OBJ

        c.delete_vdi("B")  # our dog's way: DEL_VDI alone
        assert data_objects(one_node) == set()


def test_discard_of_last_sharer_frees_deleted_parents_object(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("P", 2 * OBJ)
        write(c, "P", 0, os.urandom(2 * OBJ))
        p = c.lookup_vdi("P").vid
        c.create_vdi("P", 0, snapshot=True)
        c.create_vdi("Q", 2 * OBJ, base_vid=p)
        cdog_delete(c, "P", "")  # working P: owns nothing
        vid_snap = p
        c.delete_vdi("P", snapid=1)
        assert data_objects(one_node) == {vid_to_data_oid(vid_snap, 0),
                                          vid_to_data_oid(vid_snap, 1)}
        with Vdi(c, "Q", lock=True) as q:
            q.zero(OBJ, 0)  # SD_OP_DISCARD_OBJ: Q was the last to map it
            assert q.pread(OBJ, 0) == bytes(OBJ)
        assert data_objects(one_node) == {vid_to_data_oid(vid_snap, 1)}
        q_vid = c.lookup_vdi("Q").vid
        # QEMU 5.2's discard: a zero written into data_vdi_id[1].
        c.write_obj(vid_to_vdi_oid(q_vid), bytes(4), data_vid_offset(1))
        assert data_objects(one_node) == set()
