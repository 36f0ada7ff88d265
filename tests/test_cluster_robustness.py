"""Cluster robustness against real `sheep` processes: stale copies as the
last source of a double failure, objects removed while a node was away
staying removed, a write to an object its owner's recovery never saw.

Waits are generous polls (no timing thresholds); every process is one this
test started, stopped by pid.
"""

from __future__ import annotations

import os
import shutil

from conftest import SheepFactory, SheepProcess
from test_cluster_daemon import (
    MiB,
    node_count,
    objects,
    recovered,
    running,
    three,
    wait_for,
    wait_settled,
)

from sheepblk.client import Vdi
from sheepblk.proto import vid_to_data_oid

SLOT = 64 * 1024


def stale(node: SheepProcess) -> dict[str, int]:
    """oid name -> epoch of every stale copy in the node's obj/.stale/."""
    out = {}
    for p in (node.store / "obj" / ".stale").iterdir():
        name, _, ep = p.name.partition(".")
        out[name] = int(ep)
    return out


def write_slots(node: SheepProcess, name: str, count: int) -> dict[int, bytes]:
    """64 KiB of random bytes at the start of each of `count` objects."""
    written = {}
    with node.client() as c, Vdi(c, name) as v:
        for i in range(count):
            data = os.urandom(SLOT)
            v.pwrite(data, i * 4 * MiB + 4096 * (i % 7))
            written[i * 4 * MiB + 4096 * (i % 7)] = data
    return written


def check_slots(node: SheepProcess, name: str, written: dict[int, bytes]) -> None:
    with node.client() as c, Vdi(c, name) as v:
        for off, data in written.items():
            assert v.pread(len(data), off) == data, f"bytes at {off} lost"


def test_stale_copy_is_the_last_source(sheep_factory: SheepFactory) -> None:
    a, b, c = three(sheep_factory, copies=2)
    with a.client() as cl:
        cl.create_vdi("Alice", 160 * MiB)
    written = write_slots(a, "Alice", 40)
    # C leaves and comes back: A and B held everything meanwhile, so once
    # the cluster recovered, each object's copy on its third node is stale.
    c.kill9()
    wait_for(lambda: node_count(a) == 2, "2 nodes")
    wait_for(lambda: recovered([a, b]), "recovery without C")
    c.start()
    wait_for(lambda: node_count(a) == 3, "3 nodes")
    wait_settled([a, b, c], 2)
    wait_for(lambda: bool(set(stale(b)) - set(objects(b))), "stale copies on B")
    only_stale = set(stale(b)) - set(objects(b))
    assert only_stale
    # A dies, and C dies with its disk: B's stale copies are all that is
    # left of the objects A and C owned.
    a.kill9()
    c.kill9()
    shutil.rmtree(c.store)
    wait_for(lambda: node_count(b) == 1, "B alone")
    c.start()  # a replacement node with an empty disk
    wait_for(lambda: node_count(b) == 2 and running(c), "B and the new C")
    wait_settled([b, c], 2)
    assert only_stale <= set(objects(b)) & set(objects(c))
    check_slots(b, "Alice", written)
    check_slots(c, "Alice", written)


def test_objects_removed_while_away_stay_removed(sheep_factory: SheepFactory) -> None:
    a, b, c = three(sheep_factory, copies=3)
    with a.client() as cl:
        cl.create_vdi("Alice", 64 * MiB)
        cl.create_vdi("Bob", 64 * MiB)
        alice, bob = cl.lookup_vdi("Alice").vid, cl.lookup_vdi("Bob").vid
    kept = write_slots(a, "Alice", 8)
    write_slots(a, "Bob", 8)
    bob_objs = {f"{vid_to_data_oid(bob, i):016x}" for i in range(8)}
    discarded = f"{vid_to_data_oid(alice, 3):016x}"
    assert bob_objs <= set(objects(c)) and discarded in objects(c)
    c.kill9()
    wait_for(lambda: node_count(a) == 2, "2 nodes")
    with a.client() as cl:
        cl.delete_vdi("Bob")
        cl.discard_obj(vid_to_data_oid(alice, 3))
    del kept[3 * 4 * MiB + 4096 * 3]
    wait_for(lambda: recovered([a, b]), "recovery without C")
    c.start()
    wait_for(lambda: node_count(a) == 3, "3 nodes")
    wait_settled([a, b, c], 3)
    for n in (a, b, c):
        names = set(objects(n))
        assert not names & bob_objs, "objects of the deleted VDI came back"
        assert discarded not in names, "the discarded object came back"
    check_slots(c, "Alice", kept)
    with c.client() as cl, Vdi(cl, "Alice") as v:
        assert v.pread(SLOT, 3 * 4 * MiB + 4096 * 3) == bytes(SLOT)


def test_write_to_an_object_its_owner_never_recovered(sheep_factory: SheepFactory) -> None:
    """An owner whose copy is missing (its recovery never saw the object in
    any list) pulls the object when a write reaches it, instead of failing
    the write with NO_OBJ: through a peer's gateway and through its own."""
    a, b, c = three(sheep_factory, copies=3)
    with a.client() as cl:
        cl.create_vdi("Alice", 64 * MiB)
        alice = cl.lookup_vdi("Alice").vid
    written = write_slots(a, "Alice", 4)
    wait_settled([a, b, c], 3)
    (b.store / "obj" / f"{vid_to_data_oid(alice, 1):016x}").unlink()
    (c.store / "obj" / f"{vid_to_data_oid(alice, 2):016x}").unlink()
    patch = os.urandom(4096)
    with a.client() as cl, Vdi(cl, "Alice") as v:  # b's copy: a WRITE_PEER
        v.pwrite(patch, 4 * MiB + 8192)
    with c.client() as cl, Vdi(cl, "Alice") as v:  # c's copy: c's own gateway
        v.pwrite(patch, 8 * MiB + 8192)
    for base in (4 * MiB, 8 * MiB):
        off = base + 4096 * (base // (4 * MiB) % 7)
        old = bytearray(written[off])
        old[8192 - (off - base):8192 - (off - base) + 4096] = patch
        written[off] = bytes(old)
    wait_settled([a, b, c], 3)
    for n in (a, b, c):
        check_slots(n, "Alice", written)
