"""farm's durability order, seen from the files alone: what a fresh store
on the same directory reads is what a power cut right now would leave
(the unflushed entries live only in memory), and the bytes the on-disk
entries name are never overwritten before a flush."""

from __future__ import annotations

import os
from pathlib import Path

from sheepblk.store import FarmStore
from sheepblk.store.farm_format import CHUNK_SIZE

OBJ = 4 << 20
OID = 0x7C2B2500000001


def _read(s: FarmStore, off: int, n: int) -> bytes:
    buf = memoryview(bytearray(n))
    s.read_into(OID, off, buf)
    return bytes(buf)


def _file(tmp: Path) -> bytes:
    return (tmp / "obj" / f"{OID:016x}").read_bytes()


def test_cached_writes_leave_the_durable_state_alone_until_flush(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    old = os.urandom(OBJ)
    s.create_and_write(OID, OBJ, 0, memoryview(old), sync=True)
    before = _file(tmp_path)
    ino = os.stat(tmp_path / "obj" / f"{OID:016x}").st_ino
    new_small = os.urandom(4096)
    new_span = os.urandom(3 * CHUNK_SIZE)  # across chunks, unaligned
    s.write(OID, 100, memoryview(new_small), sync=False)
    s.write(OID, CHUNK_SIZE // 2 + 5 * CHUNK_SIZE, memoryview(new_span), sync=False)
    s.write(OID, 200, memoryview(b"again"), sync=False)  # the same chunk twice
    want = bytearray(old)
    want[100:100 + 4096] = new_small
    want[CHUNK_SIZE // 2 + 5 * CHUNK_SIZE:CHUNK_SIZE // 2 + 8 * CHUNK_SIZE] = new_span
    want[200:205] = b"again"
    assert _read(s, 0, OBJ) == want  # this store sees its writes
    # What is on disk still reads as the old object, byte for byte where the
    # old entries point, and the file was written in place (no rename).
    assert _read(FarmStore(tmp_path), 0, OBJ) == old
    after = _file(tmp_path)
    assert os.stat(tmp_path / "obj" / f"{OID:016x}").st_ino == ino
    head_len = 4096  # header and table of a 4 MiB object fit in the first page
    assert after[:head_len] == before[:head_len]
    s.flush()
    assert _read(FarmStore(tmp_path), 0, OBJ) == want


def test_sync_write_settles_only_its_chunks(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    s.create_and_write(OID, OBJ, 0, memoryview(bytes(OBJ)), sync=True)
    s.write(OID, 0, memoryview(b"cached"), sync=False)
    s.write(OID, 10 * CHUNK_SIZE, memoryview(b"synced"), sync=True)
    fresh = FarmStore(tmp_path)
    assert _read(fresh, 0, 6) == bytes(6)
    assert _read(fresh, 10 * CHUNK_SIZE, 6) == b"synced"
    s.write(OID, 3, memoryview(b"XY"), sync=True)  # the pending chunk, synced
    assert _read(FarmStore(tmp_path), 0, 6) == b"cacXYd"


def test_move_to_stale_and_remove_settle_or_drop_pending(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    s.create_and_write(OID, OBJ, 0, memoryview(bytes(OBJ)), sync=True)
    s.write(OID, 0, memoryview(b"kept"), sync=False)
    s.move_to_stale(OID, 3)
    buf = memoryview(bytearray(4))
    FarmStore(tmp_path).read_stale(OID, 3, buf)
    assert bytes(buf) == b"kept"
    s.create_and_write(OID, OBJ, 0, memoryview(bytes(OBJ)), sync=True)
    s.write(OID, 0, memoryview(b"gone"), sync=False)
    s.remove(OID)
    s.flush()  # nothing left to settle for a removed object


def test_a_flush_of_many_objects_survives_a_power_cut_and_fails_on_a_bad_fsync(
        tmp_path: Path) -> None:
    """A flush settles all the objects' entries together (their syncs side
    by side): after it, a power cut keeps every cached write; an fsync that
    fails for one object fails the flush, and the others are still settled."""
    from powercut import PowerCutFS

    from sheepblk.store import StoreIOError

    oids = [OID + i for i in range(12)]
    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        root = pc.mountpoint / "store"
        s = FarmStore(root)
        want = {}
        for oid in oids:
            s.create_and_write(oid, OBJ, 0, memoryview(os.urandom(OBJ)), sync=True)
        for oid in oids:
            data = os.urandom(2 * CHUNK_SIZE)
            s.write(oid, CHUNK_SIZE // 2, memoryview(data), sync=False)
            want[oid] = data
        s.flush()
        pc.crash("all")
        pc.restart()
        s = FarmStore(root)
        for oid in oids:
            buf = memoryview(bytearray(2 * CHUNK_SIZE))
            s.read_into(oid, CHUNK_SIZE // 2, buf)
            assert bytes(buf) == want[oid], f"{oid:016x}"
        for oid in oids:
            s.write(oid, 0, memoryview(b"later" * 100), sync=False)
        pc.fail_next_fsync(f"store/obj/{oids[3]:016x}")
        try:
            s.flush()
        except StoreIOError as e:
            assert f"{oids[3]:016x}" in str(e)
        else:
            raise AssertionError("the flush hid a failed fsync")
        pc.crash("all")
        pc.restart()
        s = FarmStore(root)
        for oid in oids:
            if oid != oids[3]:
                buf = memoryview(bytearray(500))
                s.read_into(oid, 0, buf)
                assert bytes(buf) == b"later" * 100, f"{oid:016x}"
