"""Cluster robustness against real `sheep` processes: stale copies as the
last source of an object and their end once every node recovered, objects
removed while a node was away
staying removed, a write to an object its owner's recovery never saw.

Waits are generous polls (no timing thresholds); every process is one this
test started, stopped by pid.
"""

from __future__ import annotations

import os

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


def test_own_stale_copies_are_the_last_source(sheep_factory: SheepFactory) -> None:
    a, b = three(sheep_factory, n=2, copies=1)
    with a.client() as cl:
        cl.create_vdi("Alice", 160 * MiB)
    written = write_slots(a, "Alice", 40)
    on_b = set(objects(b))
    assert on_b
    # B is away while A runs alone; back, it moves what it holds to
    # .stale/ (its copies may be old), and with one copy per object, its
    # own stale copies are the only source of the objects it owns.
    b.kill9()
    wait_for(lambda: node_count(a) == 1, "A alone")
    wait_for(lambda: recovered([a]), "recovery without B")
    b.start()
    wait_for(lambda: node_count(a) == 2 and running(b), "A and B")
    wait_settled([a, b], 1)
    assert on_b <= set(objects(b))
    check_slots(a, "Alice", written)
    check_slots(b, "Alice", written)


def test_stale_copies_go_once_every_member_recovered(sheep_factory: SheepFactory) -> None:
    """As Sheepdog's tests 032 and 033 expect: once every member recovered
    the epoch without missing an object, no node keeps a stale copy or an
    object it does not own."""
    a, b, c = three(sheep_factory, copies=2)
    with a.client() as cl:
        cl.create_vdi("Alice", 160 * MiB)
    written = write_slots(a, "Alice", 40)
    # C leaves and comes back: while it was away A and B held everything,
    # so the objects C owns again were copies A or B owned at the last
    # epoch (and, on C, copies moved aside when it came back).
    c.kill9()
    wait_for(lambda: node_count(a) == 2, "2 nodes")
    wait_for(lambda: recovered([a, b]), "recovery without C")
    c.start()
    wait_for(lambda: node_count(a) == 3 and running(c), "3 nodes")
    wait_settled([a, b, c], 2)
    wait_for(lambda: not any(stale(n) for n in (a, b, c)), "no stale copies")
    wait_settled([a, b, c], 2)
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
