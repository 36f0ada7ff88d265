"""QEMU's snapshot sequence on a cluster, where an object and the snapshot
object it copies from live on different nodes (Sheepdog's test 013)."""

from __future__ import annotations

import os

from conftest import SheepFactory, wait_for
from qemu_replay import QemuDisk
from test_cluster_daemon import node_count, running

from sheepblk.client import Vdi
from sheepblk.proto import vid_to_data_oid
from sheepblk.ring import Ring

OBJ = 4 << 20
OBJECTS = 12


def test_write_after_snapshot_copies_from_another_node(sheep_factory: SheepFactory,
                                                       driver: str | None) -> None:
    nodes = sheep_factory.start(6, cluster=driver)
    wait_for(lambda: node_count(nodes[0]) == 6, "6 nodes")
    with nodes[0].client() as c:
        c.make_fs(copies=1)
    wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
    with nodes[0].client() as c:
        c.create_vdi("snaps", OBJECTS * OBJ)
        ring = Ring(c.node_list())
    model = bytearray(OBJECTS * OBJ)
    # Talk to every node in turn, as qemu-io does to the one it is given.
    for round_, gateway in enumerate(nodes):
        disk = QemuDisk(gateway.port, "snaps").open()
        for idx in range(OBJECTS):
            data = os.urandom(512)
            off = idx * OBJ + 512 * round_
            disk.writev(off, data)
            model[off:off + 512] = data
        old_vid = disk.vid
        new_vid = disk.snapshot(f"tag{round_}")
        if round_ == 0:
            # The point of the test: with copies=1 some copy-on-write
            # sources live on another node than their new object.
            apart = [i for i in range(OBJECTS)
                     if ring.oid_to_nodes(vid_to_data_oid(old_vid, i), 1)
                     != ring.oid_to_nodes(vid_to_data_oid(new_vid, i), 1)]
            assert apart, "every object kept its node: the ring hides the case"
        disk.close()
    disk = QemuDisk(nodes[0].port, "snaps").open()
    for idx in range(OBJECTS):  # the first write after the last snapshot
        disk.writev(idx * OBJ + 4000, b"w" * 100)
        model[idx * OBJ + 4000:idx * OBJ + 4100] = b"w" * 100
    assert disk.readv(0, OBJECTS * OBJ) == model
    disk.close()
    with nodes[3].client() as c, Vdi(c, "snaps", writable=False) as v:
        assert v.pread(OBJECTS * OBJ, 0) == model
