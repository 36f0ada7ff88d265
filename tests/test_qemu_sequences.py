"""QEMU's request sequences (tests/qemu_replay.py) against a real sheep,
checked answer by answer and byte by byte against a model, and against
what our own client and dog read back."""

from __future__ import annotations

import os
import time

import pytest
from conftest import SheepProcess
from qemu_replay import QemuDisk, QemuError, Sock, find_vdi_name, obj_req
from test_vdi_free import data_objects

from sheepblk.client import SheepdogError, Vdi
from sheepblk.proto import Op, Res, vid_to_data_oid, vid_to_vdi_oid

MIB = 1 << 20
OBJ = 4 * MIB
# How long a released lock may take to show (it goes through the ordered
# stream after the connection's close is noticed); only a bound on waiting.
SETTLE = 30.0


def wait_unlocked(node: SheepProcess, name: str) -> None:
    deadline = time.monotonic() + SETTLE
    with node.client() as c:
        while True:
            try:
                vid = c.lock_vdi(name)
            except SheepdogError as e:
                assert e.result == Res.VDI_LOCKED
                assert time.monotonic() < deadline, "the lock was never released"
                time.sleep(0.05)
                continue
            c.release_vdi(vid)
            return


def assert_locked(node: SheepProcess, name: str) -> None:
    with pytest.raises(QemuError) as e:
        find_vdi_name(node.port, name, lock=True)
    assert e.value.result == Res.VDI_LOCKED
    with node.client() as c, pytest.raises(SheepdogError) as e2:
        Vdi(c, name, lock=True)
    assert "locked" in str(e2.value).lower()


def test_open_write_read_flush_close(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("vm", 3 * OBJ)
    model = bytearray(3 * OBJ)
    disk = QemuDisk(one_node.port, "vm").open()
    steps = [(0, os.urandom(512)), (OBJ - 4096, os.urandom(8192)),  # spans objects 0 and 1
             (2 * OBJ + 12345, os.urandom(100_000)), (4096, os.urandom(2 * OBJ))]
    for off, data in steps:
        disk.writev(off, data)
        model[off:off + len(data)] = data
        assert disk.readv(0, 3 * OBJ) == model
    disk.flush()
    assert disk.readv(OBJ - 10, 20) == model[OBJ - 10:OBJ + 10]
    # The index QEMU wrote is the one the server keeps.
    with one_node.client() as c, Vdi(c, "vm", writable=False) as v:
        assert v.index[:3] == [disk.vid] * 3
        assert v.pread(3 * OBJ, 0) == model
    assert disk.close() == Res.SUCCESS
    wait_unlocked(one_node, "vm")


def test_pipelined_requests_answered_by_id(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("p", 2 * OBJ)
    disk = QemuDisk(one_node.port, "p").open()
    data = os.urandom(2 * OBJ)
    disk.writev(0, data)
    assert disk.fd is not None
    # Sixteen reads in flight on one socket before any answer is read.
    for i in range(16):
        disk.fd.send(obj_req(Op.READ_OBJ, vid_to_data_oid(disk.vid, i % 2), length=4096,
                             offset=i * 4096, copies=1, rid=1000 + i))
    got = {}
    for _ in range(16):
        rsp, body = disk.fd.recv()
        assert rsp.result == Res.SUCCESS
        got[rsp.id] = body
    for i in range(16):
        start = (i % 2) * OBJ + i * 4096
        assert got[1000 + i] == data[start:start + 4096]
    disk.close()


def test_lock_survives_the_temporary_socket_and_dies_with_qemu(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("L", OBJ)
    disk = QemuDisk(one_node.port, "L").open()
    # find_vdi_name() closed its socket: the lock is still QEMU's.
    assert_locked(one_node, "L")
    disk.writev(0, b"a" * 4096)  # the I/O socket joins the session
    assert_locked(one_node, "L")
    disk.close()  # sd_close(): RELEASE_VDI on yet another socket
    wait_unlocked(one_node, "L")

    disk = QemuDisk(one_node.port, "L").open()
    assert_locked(one_node, "L")
    disk.die()  # killed before its first I/O: every socket closed
    wait_unlocked(one_node, "L")

    disk = QemuDisk(one_node.port, "L").open()
    disk.writev(0, b"b" * 4096)
    disk.die()  # killed while running
    wait_unlocked(one_node, "L")


def test_two_qemus_on_one_host_keep_their_own_locks(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("A", OBJ)
        c.create_vdi("B", OBJ)
    a = QemuDisk(one_node.port, "A").open()
    b = QemuDisk(one_node.port, "B").open()
    a.writev(0, b"a" * 512)
    b.writev(0, b"b" * 512)
    a.die()
    wait_unlocked(one_node, "A")
    assert_locked(one_node, "B")  # B's socket never touched A
    b.close()
    wait_unlocked(one_node, "B")


def test_our_client_lock_released_when_its_process_dies(one_node: SheepProcess) -> None:
    import subprocess
    import sys

    with one_node.client() as c:
        c.create_vdi("D", OBJ)
    code = ("import sys, time; from sheepblk.client import SheepClient, Vdi\n"
            f"c = SheepClient('127.0.0.1', {one_node.port})\n"
            "v = Vdi(c, 'D', lock=True); v.pwrite(b'x' * 512, 0)\n"
            "print('locked', flush=True); time.sleep(600)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as p:
        try:
            assert p.stdout is not None and p.stdout.readline() == b"locked\n"
            assert_locked(one_node, "D")
        finally:
            p.kill()  # leaving the with block closes its stdout and reaps it
    wait_unlocked(one_node, "D")


def test_snapshot_cow_and_discard(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("S", 3 * OBJ)
    disk = QemuDisk(one_node.port, "S").open()
    v1 = os.urandom(3 * OBJ)
    disk.writev(0, v1)
    old_vid = disk.vid
    new_vid = disk.snapshot("before", vm_state_size=0, vm_clock_nsec=123)
    assert new_vid != old_vid and disk.vid == new_vid
    assert disk.inode.parent_vdi_id == old_vid
    # First write after the snapshot: CREATE_AND_WRITE with COW from the
    # snapshot's object, then the index entry points at the new VDI.
    patch = os.urandom(1000)
    disk.writev(OBJ + 10, patch)
    now = bytearray(v1)
    now[OBJ + 10:OBJ + 1010] = patch
    assert disk.readv(0, 3 * OBJ) == now
    assert disk.index[:3] == [old_vid, new_vid, old_vid]
    with one_node.client() as c:
        with Vdi(c, "S", tag="before", writable=False) as snap:
            assert snap.inode.is_snapshot and snap.inode.tag == "before"
            assert snap.inode.vm_clock_nsec == 123
            assert snap.pread(3 * OBJ, 0) == v1
        # A snapshot's objects are read-only to everyone.
        with Sock(one_node.port) as probe:
            rsp, _ = probe.do_req(
                obj_req(Op.WRITE_OBJ, vid_to_data_oid(old_vid, 0), length=3, flags=1), b"abc")
        assert rsp.result == Res.READONLY
    # Discard QEMU 5.2's way (index write) and 2.x's way (DISCARD_OBJ).
    disk.discard(OBJ, OBJ)  # own object 1: freed
    assert vid_to_data_oid(new_vid, 1) not in data_objects(one_node)
    disk.discard(2 * OBJ, OBJ, qemu52=False)  # shared with the snapshot: kept
    assert vid_to_data_oid(old_vid, 2) in data_objects(one_node)
    now[OBJ:3 * OBJ] = bytes(2 * OBJ)
    assert disk.readv(0, 3 * OBJ) == now
    disk.close()
    with one_node.client() as c, Vdi(c, "S", writable=False) as v:
        assert v.pread(3 * OBJ, 0) == now
        assert v.index[:3] == [old_vid, 0, 0]
        assert c.read_obj(vid_to_vdi_oid(old_vid), 8, 520) != bytes(8)  # snap_ctime set


def test_snapshot_open_is_refused_writes(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("R", OBJ)
    disk = QemuDisk(one_node.port, "R").open()
    disk.writev(0, b"r" * 4096)
    disk.snapshot("t")
    disk.close()
    snap = QemuDisk(one_node.port, "R").open(tag="t")
    assert snap.inode.is_snapshot
    with pytest.raises(QemuError) as e:  # without QEMU's sd_create_branch
        snap.writev(0, b"w" * 512)
    assert e.value.result == Res.READONLY
    assert snap.readv(0, 4096) == b"r" * 4096
    snap.close()


def test_snapshot_moves_the_lock_to_the_new_working_vdi(one_node: SheepProcess) -> None:
    """qemu-img snapshot while QEMU runs: the writer keeps its lock on the
    new working VDI (a second writer is refused), the snapshot is free to
    open at once, and QEMU's close releases the lock it holds."""
    with one_node.client() as c:
        c.create_vdi("M", OBJ)
    disk = QemuDisk(one_node.port, "M").open()
    disk.writev(0, b"m" * 4096)
    old_vid = disk.vid
    new_vid = disk.snapshot("t")
    assert new_vid != old_vid
    assert_locked(one_node, "M")
    with one_node.client() as c:
        snap = c.lock_vdi("M", tag="t")  # not held by anyone: granted now
        assert snap == old_vid
        c.release_vdi(snap)
    disk.writev(4096, b"n" * 4096)  # QEMU goes on writing the new VDI
    assert_locked(one_node, "M")
    disk.close()
    wait_unlocked(one_node, "M")
    with one_node.client() as c, Vdi(c, "M") as v:
        assert v.pread(8192, 0) == b"m" * 4096 + b"n" * 4096
