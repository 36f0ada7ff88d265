"""The plain store: sparse creation, zeros for unwritten ranges, atomic
creation, copy-on-write, flush of cached writes, pid lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sheepblk.proto import vid_to_data_oid, vid_to_vdi_oid
from sheepblk.store import (
    AlreadyRunning,
    EpochStore,
    NodeConfig,
    NoObject,
    PidLock,
    PlainStore,
    StoreIOError,
)
from sheepblk.store.plain import trimmed

MiB = 1 << 20


def test_create_is_sparse_and_reads_zeros(tmp_path: Path) -> None:
    s = PlainStore(tmp_path)
    s.create_and_write(0x1234, 4 * MiB, 4096, memoryview(b"x" * 4096), sync=True)
    path = tmp_path / "obj" / "0000000000001234"
    st = path.stat()
    assert st.st_size == 4 * MiB
    assert st.st_blocks * 512 < 1 * MiB  # only the payload is allocated
    buf = memoryview(bytearray(8192 + 10))
    s.read_into(0x1234, 0, buf)
    assert bytes(buf[:4096]) == bytes(4096)
    assert bytes(buf[4096:8192]) == b"x" * 4096
    assert bytes(buf[8192:]) == bytes(10)


def test_an_inode_written_whole_keeps_its_zeros_as_holes(tmp_path: Path) -> None:
    """Recovery creates an inode with its whole 12 MiB buffer, mostly
    zeros: as C sheep's, only the non-zero blocks take disk (Sheepdog's
    test 113 counts the bytes objects take). A data object is written as
    given."""
    s = PlainStore(tmp_path)
    inode = vid_to_vdi_oid(0xABC)
    buf = bytearray(12 * MiB)
    buf[0:100] = b"h" * 100
    buf[5 * MiB + 10] = 7
    s.create_and_write(inode, len(buf), 0, memoryview(buf), sync=True)
    st = (tmp_path / "obj" / f"{inode:016x}").stat()
    assert st.st_size == 12 * MiB and st.st_blocks * 512 < 6 * MiB
    got = memoryview(bytearray(len(buf)))
    s.read_into(inode, 0, got)
    assert got == buf
    data = vid_to_data_oid(0xABC, 1)
    s.create_and_write(data, 4 * MiB, 0, memoryview(bytes(4 * MiB)), sync=True)
    assert (tmp_path / "obj" / f"{data:016x}").stat().st_blocks * 512 == 4 * MiB


def test_trimmed_keeps_the_span_of_non_zero_blocks() -> None:
    data = bytearray(5 * 4096)
    data[4096 + 1] = 1
    data[3 * 4096 - 1] = 2
    part, at = trimmed(memoryview(data), 100)
    # At offset 100, the non-zero bytes sit at 4197 and 12387: the blocks
    # [4096, 16384) of the object hold them.
    assert (at, len(part)) == (4096, 3 * 4096)
    assert part[4197 - 4096] == 1 and part[12387 - 4096] == 2
    assert trimmed(memoryview(bytes(8192)), 0)[0].nbytes == 0


def test_short_file_reads_as_zeros(tmp_path: Path) -> None:
    s = PlainStore(tmp_path)
    s.create_and_write(1, 4 * MiB, 0, memoryview(b"abc"), sync=False)
    os.truncate(tmp_path / "obj" / "0000000000000001", 3)
    buf = memoryview(bytearray(b"\xff" * 100))
    s.read_into(1, 0, buf)
    assert bytes(buf) == b"abc" + bytes(97)


def test_missing_object(tmp_path: Path) -> None:
    s = PlainStore(tmp_path)
    with pytest.raises(NoObject):
        s.read_into(7, 0, memoryview(bytearray(1)))
    with pytest.raises(NoObject):
        s.write(7, 0, memoryview(b"a"), sync=True)
    with pytest.raises(NoObject):
        s.remove(7)
    assert not s.exists(7)


def test_write_and_cow(tmp_path: Path) -> None:
    s = PlainStore(tmp_path)
    s.create_and_write(1, 4 * MiB, 0, memoryview(b"a" * 10), sync=True)
    s.write(1, 3 * MiB, memoryview(b"b" * 10), sync=True)
    s.create_and_write(2, 4 * MiB, 5, memoryview(b"C"), cow_oid=1, sync=True)
    buf = memoryview(bytearray(10))
    s.read_into(2, 0, buf)
    assert bytes(buf) == b"aaaaaCaaaa"
    s.read_into(2, 3 * MiB, buf)
    assert bytes(buf) == b"b" * 10
    s.read_into(1, 0, buf)
    assert bytes(buf) == b"a" * 10  # the source is untouched
    assert sorted(s.oids()) == [1, 2]


def test_create_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A creation that fails half way leaves the old object and no debris."""
    s = PlainStore(tmp_path)
    s.create_and_write(1, 4 * MiB, 0, memoryview(b"old"), sync=True)

    def boom(*a: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(StoreIOError):
        s.create_and_write(1, 4 * MiB, 0, memoryview(b"new"), sync=True)
    monkeypatch.undo()
    buf = memoryview(bytearray(3))
    s.read_into(1, 0, buf)
    assert bytes(buf) == b"old"
    assert list((tmp_path / "obj" / ".tmp").iterdir()) == []


def test_leftover_temp_files_are_cleaned(tmp_path: Path) -> None:
    PlainStore(tmp_path)
    (tmp_path / "obj" / ".tmp" / "0000000000000001.1.1").write_bytes(b"half")
    s = PlainStore(tmp_path)
    assert list((tmp_path / "obj" / ".tmp").iterdir()) == []
    assert list(s.oids()) == []


def test_flush_and_stale_and_format(tmp_path: Path) -> None:
    s = PlainStore(tmp_path)
    s.create_and_write(1, 4 * MiB, 0, memoryview(b"a"), sync=False)
    s.write(1, 0, memoryview(b"b"), sync=False)
    s.flush()
    s.create_and_write(2, 4 * MiB, 0, memoryview(b"a"), sync=True)
    s.move_to_stale(2, 3)
    assert (tmp_path / "obj" / ".stale" / "0000000000000002.3").exists()
    assert not s.exists(2)
    s.format()
    assert list(s.oids()) == []
    size, used = s.space()
    assert size > 0 and 0 <= used <= size


def test_config_epochs_roundtrip(tmp_path: Path) -> None:
    from sheepblk.proto import NodeId, SdNode

    cfg = NodeConfig(ctime=5 << 32, copies=2, flags=4, store="plain")
    cfg.save(tmp_path)
    assert NodeConfig.load(tmp_path) == cfg
    assert NodeConfig.load(tmp_path / "nothing").ctime == 0
    ep = EpochStore(tmp_path)
    nodes = [SdNode(NodeId("127.0.0.1", 7000), 128, 1, 10)]
    ep.write(1, nodes, when=123)
    ep.write(2, nodes + [SdNode(NodeId("127.0.0.1", 7001))], when=124)
    assert ep.latest() == 2
    assert ep.read(1) == (nodes, 123)
    assert ep.read(3) is None


def test_pid_lock_is_exclusive(tmp_path: Path) -> None:
    a = PidLock(tmp_path)
    a.write_pid()
    with pytest.raises(AlreadyRunning, match=str(os.getpid())):
        PidLock(tmp_path)
    a.release()
    PidLock(tmp_path).release()
