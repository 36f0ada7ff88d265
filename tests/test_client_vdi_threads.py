"""The blocking client's Vdi used from many threads at once, as the nbdkit
plugin (parallel thread model) and sheepfs use it.

Many threads write disjoint pieces of the same unallocated objects at the
same moment: each object must be created exactly once (a second
CREATE_AND_WRITE would wipe the first writer's bytes, a second COW copy
would bring back the snapshot's old bytes over them), every byte written
must read back, and the inode on the sheep must record every object.
"""

from __future__ import annotations

import os
import threading

from conftest import SheepProcess

from sheepblk.client import SheepClient, Vdi
from sheepblk.proto import vid_to_vdi_oid
from sheepblk.proto.inode import data_vid_offset

MIB = 1 << 20
OBJ = 4 * MIB
OBJECTS = 3
PIECE = 64 * 1024
THREADS = 16


def _hammer(v: Vdi, pieces: list[tuple[int, bytes]]) -> None:
    """Write every piece from THREADS threads that start together."""
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(mine: list[tuple[int, bytes]]) -> None:
        try:
            start.wait()
            for off, data in mine:
                v.pwrite(data, off)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(pieces[i::THREADS],))
               for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _stored_index(c: SheepClient, vid: int, n: int) -> list[int]:
    raw = c.read_obj(vid_to_vdi_oid(vid), 4 * n, data_vid_offset(0))
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 4 * n, 4)]


def _pieces() -> list[tuple[int, bytes]]:
    # Every other piece of the first OBJECTS objects: what lies between
    # must stay as it was (zeros, or the snapshot's bytes after a COW).
    return [(off, os.urandom(PIECE)) for off in range(0, OBJECTS * OBJ, 2 * PIECE)]


def test_concurrent_first_writes_allocate_each_object_once(one_node: SheepProcess) -> None:
    size = (OBJECTS + 1) * OBJ
    with one_node.client(pool_size=THREADS) as c:
        c.create_vdi("T", size)
        with Vdi(c, "T", lock=True) as v:
            pieces = _pieces()
            _hammer(v, pieces)
            want = bytearray(size)
            for off, data in pieces:
                want[off:off + PIECE] = data
            assert v.pread(size, 0) == want
            assert v.index[:OBJECTS] == [v.vid] * OBJECTS and v.index[OBJECTS] == 0
            assert _stored_index(c, v.vid, OBJECTS + 1) == v.index
        with Vdi(c, "T", writable=False) as fresh:  # a new reader sees the same
            assert fresh.pread(size, 0) == want


def test_concurrent_copy_on_write_keeps_every_writer(one_node: SheepProcess) -> None:
    size = OBJECTS * OBJ
    base = os.urandom(size)
    with one_node.client(pool_size=THREADS) as c:
        c.create_vdi("S", size)
        with Vdi(c, "S", lock=True) as v:
            v.pwrite(base, 0)
            v.flush()
        snap_vid = c.lookup_vdi("S").vid
        c.create_vdi("S", size, snapshot=True, base_vid=snap_vid)
        with Vdi(c, "S", lock=True) as v:
            assert v.vid != snap_vid and v.index == [snap_vid] * OBJECTS
            pieces = _pieces()
            _hammer(v, pieces)
            want = bytearray(base)
            for off, data in pieces:
                want[off:off + PIECE] = data
            assert v.pread(size, 0) == want
            assert v.index == [v.vid] * OBJECTS
            assert _stored_index(c, v.vid, OBJECTS) == v.index
        with Vdi(c, "S", snapid=1, writable=False) as snap:  # the snapshot is untouched
            assert snap.pread(size, 0) == base
