"""A VDI family through every step (write, snapshot, write, clone, write,
rollback, delete), compared byte for byte with a model after each step,
read both through the client's Vdi and through `dog vdi read`; sizes as
`dog vdi list` shows them; and bad input that must change nothing."""

from __future__ import annotations

import os
import random
import time

import pytest
from conftest import SheepProcess
from test_dog import fails, ok, vdi_rows
from test_vdi_free import data_objects

from sheepblk.client import SheepClient, SheepdogError, Vdi
from sheepblk.proto import Op, Res, VdiArgs, vid_to_data_oid

MIB = 1 << 20
OBJ = 4 * MIB
SIZE = 4 * OBJ


class Model:
    """Expected contents of every VDI (and snapshot "NAME@TAG")."""

    def __init__(self, node: SheepProcess, c: SheepClient) -> None:
        self.node, self.c = node, c
        self.disks: dict[str, bytearray] = {}

    def check(self) -> None:
        for key, want in self.disks.items():
            name, _, tag = key.partition("@")
            with Vdi(self.c, name, tag=tag, writable=False) as v:
                assert v.pread(len(want), 0) == want, key
            args = ["-s", tag] if tag else []
            assert ok(self.node, "vdi", "read", *args, name) == want, key

    def write(self, name: str, offset: int, data: bytes, *, via_dog: bool) -> None:
        if via_dog:
            ok(self.node, "vdi", "write", name, str(offset), str(len(data)), input=data)
        else:
            with Vdi(self.c, name, lock=True) as v:
                v.pwrite(data, offset)
        self.disks[name][offset:offset + len(data)] = data
        self.check()


def test_family_sequence_against_model(one_node: SheepProcess) -> None:
    rnd = random.Random(4)
    with one_node.client() as c:
        m = Model(one_node, c)
        ok(one_node, "vdi", "create", "Alice", str(SIZE))
        m.disks["Alice"] = bytearray(SIZE)
        m.check()
        m.write("Alice", 0, os.urandom(SIZE - OBJ), via_dog=True)
        m.write("Alice", OBJ - 100, os.urandom(300), via_dog=False)

        ok(one_node, "vdi", "snapshot", "-s", "one", "Alice")
        m.disks["Alice@one"] = bytearray(m.disks["Alice"])
        m.check()
        for _ in range(4):  # small writes spread over objects: COW each
            off = rnd.randrange(SIZE - 5000)
            m.write("Alice", off, os.urandom(rnd.randrange(1, 5000)), via_dog=rnd.random() < .5)

        ok(one_node, "vdi", "clone", "-s", "one", "Alice", "Bob")
        m.disks["Bob"] = bytearray(m.disks["Alice@one"])
        m.check()
        m.write("Bob", 2 * OBJ + 7, os.urandom(OBJ), via_dog=False)
        m.write("Alice", 3 * OBJ, os.urandom(OBJ), via_dog=True)  # a new object

        ok(one_node, "vdi", "rollback", "-f", "-s", "one", "Alice")
        m.disks["Alice"] = bytearray(m.disks["Alice@one"])
        m.check()
        m.write("Alice", 10, b"after rollback", via_dog=True)

        ok(one_node, "vdi", "delete", "-s", "one", "Alice")  # children stay readable
        del m.disks["Alice@one"]
        m.check()
        ok(one_node, "vdi", "delete", "Alice")
        del m.disks["Alice"]
        m.check()
        assert {r[1] for r in vdi_rows(one_node)} == {"Bob"}
        ok(one_node, "vdi", "delete", "Bob")
        assert data_objects(one_node) == set()


def test_thin_provisioning_and_zero_writes(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "Big", "256G")
    (row,) = vdi_rows(one_node)
    assert (row[3], row[4], row[5]) == (str(256 << 30), "0", "0")
    assert data_objects(one_node) == set()
    ok(one_node, "vdi", "write", "Big", "0", str(2 * OBJ), input=os.urandom(2 * OBJ))
    assert int(vdi_rows(one_node)[0][4]) == 2 * OBJ
    ok(one_node, "vdi", "write", "Big", "0", str(OBJ), input=bytes(OBJ))  # frees object 0
    assert int(vdi_rows(one_node)[0][4]) == OBJ
    assert len(data_objects(one_node)) == 1
    ok(one_node, "vdi", "snapshot", "-s", "t", "Big")
    rows = {r[0]: r for r in vdi_rows(one_node)}
    assert (rows["s"][4], rows["s"][5]) == (str(OBJ), "0")
    assert (rows["="][4], rows["="][5]) == ("0", str(OBJ))


def state(node: SheepProcess) -> tuple[bytes, set[int], bytes]:
    objs = {int(p.name, 16) for p in (node.store / "obj").iterdir() if p.is_file()}
    return ok(node, "vdi", "list", "-r"), objs, ok(node, "vdi", "read", "V", "0", "1M")


def test_bad_input_changes_nothing(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "V", "8M")
    ok(one_node, "vdi", "write", "V", "0", "1M", input=os.urandom(MIB))
    ok(one_node, "vdi", "snapshot", "-s", "snap", "V")
    before = state(one_node)

    assert "Only snapshot VDIs can be cloned" in fails(one_node, "vdi", "clone", "V", "W",
                                                       code=64)
    assert "Failed to find requested tag" in fails(one_node, "vdi", "clone", "-s", "nope",
                                                   "V", "W", code=1)
    assert "Failed to find requested tag" in fails(one_node, "vdi", "read", "-s", "nope",
                                                   "V", code=1)
    assert "too long" in fails(one_node, "vdi", "create", "n" * 256, "4M", code=64)
    assert "Shrinking" in fails(one_node, "vdi", "resize", "V", "4M", code=64)
    assert "too large" in fails(one_node, "vdi", "resize", "V", "1P", code=64)
    assert "is existed" in fails(one_node, "vdi", "snapshot", "-s", "snap", "V", code=1)
    with one_node.client() as c:
        # Straight to the daemon, without dog's checks.
        def refused(result: int, fn, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            with pytest.raises(SheepdogError) as e:
                fn(*a, **kw)
            assert e.value.result == result

        refused(Res.NO_TAG, c.lookup_vdi, "V", "nope")
        refused(Res.NO_VDI, c.lookup_vdi, "nobody")
        refused(Res.INVALID_PARMS, c.request, Op.NEW_VDI, VdiArgs(vdi_size=MIB).pack(),
                data=b"n" * 256)  # no NUL in the name field
        refused(Res.INVALID_PARMS, c.create_vdi, "Huge", (1 << 22) * (1 << 32) + 1)
        lock = c.connect()
        try:
            c.lock_vdi("V", conn=lock)
            refused(Res.VDI_LOCKED, c.delete_vdi, "V")
            refused(Res.VDI_LOCKED, c.lock_vdi, "V")
        finally:
            lock.close()
        with Vdi(c, "V", tag="snap", writable=False) as snap:
            refused(Res.READONLY, c.write_obj, vid_to_data_oid(snap.vid, 0), b"x", 0)
    # The lock went with its connection; everything as before.
    deadline = time.monotonic() + 30
    while True:
        try:
            with one_node.client() as c:
                vid = c.lock_vdi("V")
                c.release_vdi(vid)
            break
        except SheepdogError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert state(one_node) == before
