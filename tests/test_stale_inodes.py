"""A node that starts with some inodes only in obj/.stale/ (it came back to
a running cluster, moved everything aside, and the cluster stopped again
before its recovery brought them back) still knows those VDIs: the
start-up table reads the newest stale copy of each inode not in obj/
(Sheepdog's test 060 reboots the whole cluster three times in a row)."""

from __future__ import annotations

from pathlib import Path

from sheepblk.proto import InodeHeader, vid_to_vdi_oid
from sheepblk.server.vdi_ops import add_inodes, stored_inodes
from sheepblk.server.vdi_table import VdiTable
from sheepblk.store import PlainStore


def _inode(name: str, vid: int) -> memoryview:
    h = InodeHeader(name=name, vdi_size=1 << 30, nr_copies=2, block_size_shift=22,
                    snap_id=1, vdi_id=vid)
    return memoryview(h.pack())


def _store_inode(store: PlainStore, name: str, vid: int) -> None:
    raw = _inode(name, vid)
    store.create_and_write(vid_to_vdi_oid(vid), len(raw), 0, raw, sync=True)


def test_inodes_only_in_stale_are_loaded(tmp_path: Path) -> None:
    store = PlainStore(tmp_path)
    _store_inode(store, "Alice", 0xA1)  # stays in obj/
    _store_inode(store, "Bob", 0xB0)
    store.move_to_stale(vid_to_vdi_oid(0xB0), 3)
    _store_inode(store, "Bob-renamed-later", 0xB0)  # a newer stale copy of Bob's
    store.move_to_stale(vid_to_vdi_oid(0xB0), 5)
    _store_inode(store, "Carol", 0xC0)  # in obj/ and in .stale/: obj/ wins
    store.move_to_stale(vid_to_vdi_oid(0xC0), 2)
    _store_inode(store, "Carol", 0xC0)
    table = VdiTable()
    add_inodes(table, stored_inodes(store))
    names = {vid: e.name for vid, e in table.entries.items()}
    assert names == {0xA1: b"Alice", 0xB0: b"Bob-renamed-later", 0xC0: b"Carol"}
