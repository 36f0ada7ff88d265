"""The power-cut file system (tests/powercut) loses what a power cut may
lose and keeps what fsync made durable, on real FUSE mounts.

Each test mounts a fresh backing dir, crashes it on command, mounts it
again and looks at what survived. The model under test is the one in
tests/powercut/fs.py's docstring.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from powercut import PowerCutFS, is_mounted
from powercut.data import CHUNK, FileData, Truncate, Write, choose_subset
from powercut.journal import EntryOp, Journal, Link, Rename, Unlink
from powercut.nodes import Node

BLOCK = 4096


@pytest.fixture
def pc(tmp_path: Path) -> Iterator[PowerCutFS]:
    fs = PowerCutFS(tmp_path / "backing", tmp_path / "mnt")
    try:
        fs.start()
        yield fs
    finally:
        fs.stop()


def put(path: Path, data: bytes, *, sync: bool = False,
        flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    """Write `data` to `path` (fsync'ed if `sync`); never the directory."""
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    """fsync a directory the way sheep does (open O_RDONLY, fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable(path: Path, data: bytes) -> None:
    """A file whose data and name are durable."""
    put(path, data, sync=True)
    sync_dir(path.parent)


def blocks(*fills: bytes) -> bytes:
    return b"".join(f * BLOCK for f in fills)


# ---- data and names: all-or-nothing crashes ----


def test_unsynced_write_is_lost_and_fsynced_write_kept(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    durable(m / "kept", b"old")
    durable(m / "lost", b"old")
    put(m / "kept", b"new", sync=True)
    put(m / "lost", b"new")
    put(m / "never", b"new")
    assert (m / "lost").read_bytes() == b"new"  # readers see the cache
    summary = pc.crash()
    assert summary["dropped_writes"] >= 2 and summary["kept_writes"] == 0
    pc.restart()
    assert (m / "kept").read_bytes() == b"new"
    assert (m / "lost").read_bytes() == b"old"
    assert not (m / "never").exists()
    # the backing dir: the durable files and the (empty) orphan dir
    assert sorted(os.listdir(pc.backing)) == [".powercut", "kept", "lost"]
    assert os.listdir(pc.backing / ".powercut") == []


def test_new_file_needs_its_directory_fsynced(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    put(m / "a", b"data of a", sync=True)  # file fsync'ed, its name not
    pc.crash()
    pc.restart()
    assert not (m / "a").exists()
    put(m / "a", b"data of a", sync=True)
    sync_dir(m)
    pc.crash()
    pc.restart()
    assert (m / "a").read_bytes() == b"data of a"


def test_directory_fsync_without_file_fsync_keeps_an_empty_file(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    put(m / "a", b"unsynced")
    sync_dir(m)
    pc.crash()
    pc.restart()
    assert (m / "a").read_bytes() == b""


def test_rename_over_a_durable_file(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    durable(m / "target", b"old")
    put(m / "tmp", b"new", sync=True)
    os.rename(m / "tmp", m / "target")
    assert (m / "target").read_bytes() == b"new"
    pc.crash()
    pc.restart()
    assert (m / "target").read_bytes() == b"old"
    assert not (m / "tmp").exists()
    put(m / "tmp", b"new", sync=True)
    os.rename(m / "tmp", m / "target")
    sync_dir(m)
    pc.crash()
    pc.restart()
    assert (m / "target").read_bytes() == b"new"
    assert sorted(os.listdir(m)) == ["target"]


def test_unlink_and_truncate_need_fsync(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    durable(m / "gone", b"x")
    durable(m / "cut", blocks(b"a", b"b"))
    os.unlink(m / "gone")
    os.truncate(m / "cut", 10)
    assert (m / "cut").stat().st_size == 10
    pc.crash()
    pc.restart()
    assert (m / "gone").read_bytes() == b"x"
    assert (m / "cut").read_bytes() == blocks(b"a", b"b")
    os.unlink(m / "gone")
    sync_dir(m)
    fd = os.open(m / "cut", os.O_RDWR)
    try:
        os.ftruncate(fd, 10)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    pc.crash()
    pc.restart()
    assert not (m / "gone").exists()
    assert (m / "cut").read_bytes() == b"a" * 10


def test_nested_directories_and_links(pc: PowerCutFS) -> None:
    """A directory's fsync brings the creation of the directory along
    (journal.py); hard links and symlinks are entry ops like the rest."""
    m = pc.mountpoint
    (m / "d").mkdir()
    (m / "d" / "e").mkdir()
    put(m / "d" / "e" / "f", b"deep", sync=True)
    sync_dir(m / "d" / "e")
    (m / "loose").mkdir()
    os.link(m / "d" / "e" / "f", m / "d" / "hard")
    os.symlink("e/f", m / "d" / "soft")
    assert (m / "d" / "soft").read_bytes() == b"deep"
    pc.crash()
    pc.restart()
    assert (m / "d" / "e" / "f").read_bytes() == b"deep"
    assert not (m / "loose").exists()
    assert sorted(os.listdir(m / "d")) == ["e"]
    os.link(m / "d" / "e" / "f", m / "d" / "hard")
    os.symlink("e/f", m / "d" / "soft")
    sync_dir(m / "d")
    pc.crash()
    pc.restart()
    assert (m / "d" / "hard").read_bytes() == b"deep"
    assert (m / "d" / "hard").stat().st_ino == (m / "d" / "e" / "f").stat().st_ino
    assert os.readlink(m / "d" / "soft") == "e/f"


def test_o_dsync_writes_are_durable(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    durable(m / "f", b"old")
    put(m / "f", b"new", flags=os.O_WRONLY | os.O_DSYNC)
    pc.crash()
    pc.restart()
    assert (m / "f").read_bytes() == b"new"


def test_clean_stop_makes_everything_durable(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    (m / "d").mkdir()
    put(m / "d" / "f", b"unsynced")
    pc.restart()
    assert (m / "d" / "f").read_bytes() == b"unsynced"
    pc.stop()
    assert sorted(os.listdir(pc.backing)) == ["d"]  # no orphan dir left
    assert (pc.backing / "d" / "f").read_bytes() == b"unsynced"


# ---- random subsets ----


def test_subset_crash_leaves_only_allowed_states(pc: PowerCutFS) -> None:
    """Distinct 4 KiB blocks are each old or new; a multi-block write is
    new for a prefix of its blocks and old after; an fsync'ed write always
    survives; a file whose creation was not durable is absent, or holds
    only a page-aligned prefix of what was written to it."""
    m = pc.mountpoint
    old = blocks(*[bytes([65 + i]) for i in range(16)])  # A..P
    seen_blocks: set[tuple[int, bool]] = set()
    seen_torn = seen_new_file = seen_prefixes = 0
    for seed in range(8):
        durable(m / "f", old)
        fd = os.open(m / "f", os.O_WRONLY)
        try:
            os.pwrite(fd, b"3" * BLOCK, 15 * BLOCK)
            os.fsync(fd)
            for b in (1, 3, 5):
                os.pwrite(fd, b"1" * BLOCK, b * BLOCK)
            os.pwrite(fd, b"2" * (4 * BLOCK), 8 * BLOCK)  # blocks 8..11 at once
            os.pwrite(fd, b"4" * BLOCK, 13 * BLOCK)
        finally:
            os.close(fd)
        put(m / "new", b"n" * (3 * BLOCK))
        summary = pc.crash("subset", seed=seed)
        seen_torn += summary["torn_writes"]
        pc.restart()
        got = (m / "f").read_bytes()
        assert len(got) == len(old)
        blk = [got[i * BLOCK:(i + 1) * BLOCK] for i in range(16)]
        for b in (1, 3, 5):
            assert blk[b] in (old[b * BLOCK:(b + 1) * BLOCK], b"1" * BLOCK), (seed, b)
            seen_blocks.add((b, blk[b] == b"1" * BLOCK))
        new_prefix = [blk[b] == b"2" * BLOCK for b in range(8, 12)]
        assert new_prefix == sorted(new_prefix, reverse=True), (seed, new_prefix)
        seen_prefixes += 0 < sum(new_prefix) < 4
        for b in range(8, 12):
            assert blk[b] in (old[b * BLOCK:(b + 1) * BLOCK], b"2" * BLOCK), (seed, b)
        assert blk[15] == b"3" * BLOCK, seed
        assert blk[13] in (old[13 * BLOCK:14 * BLOCK], b"4" * BLOCK), seed
        for b in (0, 2, 4, 6, 7, 12, 14):
            assert blk[b] == old[b * BLOCK:(b + 1) * BLOCK], (seed, b)
        if (m / "new").exists():
            data = (m / "new").read_bytes()
            assert data == b"n" * len(data) and len(data) % BLOCK == 0, (seed, len(data))
            seen_new_file += 1
        for name in os.listdir(m):
            assert name in ("f", "new"), (seed, name)
            os.unlink(m / name)
        sync_dir(m)
    # The seeds did pick different subsets (the check is not vacuous).
    assert {kept for _, kept in seen_blocks} == {True, False}
    assert 0 < seen_new_file < 8
    assert seen_torn > 0 and seen_prefixes > 0


def test_choose_subset_tears_at_page_boundaries() -> None:
    rng = random.Random(1)
    ops: list[Write | Truncate] = [Write(100, b"x" * (5 * BLOCK)), Truncate(3), Write(0, b"y")]
    torn_sizes = set()
    for _ in range(200):
        kept, torn = choose_subset(ops, rng)
        assert all(k in ops or (isinstance(k, Write) and k.offset == 100) for k in kept)
        for k in kept:
            if isinstance(k, Write) and k.offset == 100 and len(k.data) < 5 * BLOCK:
                assert (k.offset + len(k.data)) % BLOCK == 0
                torn_sizes.add(len(k.data))
    assert len(torn_sizes) > 1


def test_journal_subsets_respect_directory_order_and_creation() -> None:
    """No FUSE: a kept op never follows a dropped op on one of its
    directories, nor lives in a directory whose mkdir was dropped; a
    directory fsync takes its ops and their dependencies only."""
    root, other = Node(1, 0o40755), Node(2, 0o40755)
    d, f, g = Node(3, 0o40755), Node(4, 0o100644), Node(5, 0o100644)
    ops: list[EntryOp] = [Link(root, b"d", d), Link(d, b"f", f), Link(other, b"g", g),
                          Rename(d, b"f", root, b"f", f, None), Unlink(other, b"g", g)]
    journal = Journal()
    for op in ops:
        journal.record(op)
    # the rename touches d too; the mkdir of d comes along; g's ops stay
    assert journal.take_for_dir(d) == [ops[0], ops[1], ops[3]]
    assert journal.ops == [ops[2], ops[4]]
    rng = random.Random(0)
    kinds = set()
    for _ in range(200):
        journal = Journal()
        for op in ops:
            journal.record(op)
        kept, dropped = journal.choose(rng)
        assert sorted(map(id, kept + dropped)) == sorted(map(id, ops))
        for i, op in enumerate(ops):
            if op in kept:
                earlier = [o for o in ops[:i] if set(o.dirs()) & set(op.dirs())
                           or o.made() in op.dirs()]
                assert all(o in kept for o in earlier), (i, kept)
        kinds.add(len(kept))
    assert {0, len(ops)} <= kinds and len(kinds) > 2


def test_file_data_reads_back_what_was_written(tmp_path: Path) -> None:
    """The chunk cache over a backing file against a plain bytearray, with
    fsyncs in between (no FUSE)."""
    rng = random.Random(3)
    path = tmp_path / "backing"
    ref = bytearray(rng.randbytes(3 * CHUNK + 123))
    path.write_bytes(ref)
    fd = os.open(path, os.O_RDWR)
    try:
        data = FileData(len(ref))
        for step in range(300):
            op = rng.random()
            if op < 0.6:
                off = rng.randrange(0, 5 * CHUNK)
                buf = rng.randbytes(rng.choice([1, 100, BLOCK, CHUNK, 2 * CHUNK + 7]))
                data.write(fd, off, buf)
                if off > len(ref):
                    ref.extend(bytes(off - len(ref)))
                ref[off:off + len(buf)] = buf
            elif op < 0.75:
                size = rng.randrange(0, 5 * CHUNK)
                data.truncate(size)
                del ref[size:]
                ref.extend(bytes(size - len(ref)))
            elif op < 0.85:
                data.sync(fd)
            off = rng.randrange(0, 5 * CHUNK)
            n = rng.randrange(0, 2 * CHUNK)
            assert data.read(fd, off, n) == ref[off:off + n], step
        data.sync(fd)
        assert path.read_bytes() == ref
    finally:
        os.close(fd)


# ---- injected faults ----


def test_failed_fsync_loses_what_it_covered(pc: PowerCutFS) -> None:
    """Linux's behaviour: the failed fsync's writes are dropped from the
    durable path; a later fsync succeeds without them; readers still see
    them until the crash. Writing them again makes them durable again."""
    m = pc.mountpoint
    durable(m / "f", b"old")
    fd = os.open(m / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"new", 0)
        pc.fail_next_fsync()
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.EIO
        os.fsync(fd)  # the error was reported once
        assert os.pread(fd, 3, 0) == b"new"
    finally:
        os.close(fd)
    assert pc.stats()["failed_fsyncs"] == 1
    pc.crash()
    pc.restart()
    assert (m / "f").read_bytes() == b"old"
    put(m / "f", b"new", sync=True)
    pc.crash()
    pc.restart()
    assert (m / "f").read_bytes() == b"new"


def test_failed_fsync_by_pattern(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    (m / "obj").mkdir()
    sync_dir(m)
    pc.fail_next_fsync("obj/*")
    put(m / "other", b"x", sync=True)  # does not match
    with pytest.raises(OSError) as e:
        put(m / "obj" / "a", b"x", sync=True)
    assert e.value.errno == errno.EIO
    put(m / "obj" / "b", b"y", sync=True)  # the fault was used up
    sync_dir(m / "obj")
    sync_dir(m)
    pc.crash()
    pc.restart()
    assert (m / "other").read_bytes() == b"x"
    assert (m / "obj" / "a").read_bytes() == b""  # name durable, data not
    assert (m / "obj" / "b").read_bytes() == b"y"


def test_failed_directory_fsync_keeps_entries_pending(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    put(m / "a", b"a", sync=True)
    pc.fail_next_fsync()
    with pytest.raises(OSError) as e:
        sync_dir(m)
    assert e.value.errno == errno.EIO
    pc.crash()
    pc.restart()
    assert not (m / "a").exists()


def test_enospc_fails_writes_only(pc: PowerCutFS) -> None:
    m = pc.mountpoint
    durable(m / "f", b"old")
    pc.enospc(True)
    with pytest.raises(OSError) as e:
        put(m / "f", b"new", flags=os.O_WRONLY)
    assert e.value.errno == errno.ENOSPC
    assert (m / "f").read_bytes() == b"old"
    (m / "d").mkdir()
    put(m / "empty", b"")
    os.rename(m / "empty", m / "d" / "empty")
    sync_dir(m)
    with open(m / "f", "rb+") as f:
        os.fsync(f.fileno())
    pc.enospc(False)
    put(m / "f", b"new", sync=True)
    assert (m / "f").read_bytes() == b"new"


# ---- after the crash ----


def test_crashed_mount_fails_every_request(pc: PowerCutFS, tmp_path: Path) -> None:
    m = pc.mountpoint
    durable(m / "f", b"old" * 1000)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.pwrite(fd, b'w' * 4096, 0)\n"
        "    except OSError as e:\n"
        "        print(e.errno, flush=True)\n"
        "        break\n"), str(m / "w")], stdout=subprocess.PIPE)
    fd = os.open(m / "f", os.O_RDWR)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        assert os.pread(fd, 3, 0) == b"old"  # now in the kernel's page cache
        pc.crash()
        out, _ = writer.communicate(timeout=30)
        assert out.strip() == str(errno.EIO).encode()
        for call in (lambda: os.pread(fd, 3, 0), lambda: os.pwrite(fd, b"x", 0),
                     lambda: os.fsync(fd), lambda: os.stat(m / "f"),
                     lambda: os.listdir(m), lambda: open(m / "g", "wb"),
                     lambda: os.mkdir(m / "d"), lambda: os.unlink(m / "f")):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EIO
        # Stopping with a file still open on the mount: detached lazily,
        # the daemon ends, the open file answers an error, nothing hangs.
        pc.stop()
        assert not is_mounted(m)
        with pytest.raises(OSError):
            os.pread(fd, 3, 0)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN once the daemon is gone: the fd is closed anyway
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    pc.start()
    assert (m / "f").read_bytes() == b"old" * 1000
    assert not (m / "w").exists()


# ---- what the stores do ----


def test_the_stores_syscall_patterns_work(pc: PowerCutFS) -> None:
    """plain/farm/files.py through the mount: O_EXCL staging file, sparse
    ftruncate, pwrite/preadv, fdatasync, rename across directories over an
    existing object, directory fsync, copy_file_range, sendfile, preadv
    with RWF_NOWAIT, flock on a pid file, statvfs; then a crash keeps it."""
    m = pc.mountpoint
    obj, tmp = m / "obj", m / "obj" / ".tmp"
    tmp.mkdir(parents=True)
    sync_dir(m)
    sync_dir(obj)
    durable(obj / "00a", b"old object")
    size = 4 << 20
    fd = os.open(tmp / "00a.1", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, b"payload", size - BLOCK)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(tmp / "00a.1", obj / "00a")
    sync_dir(obj)
    buf = bytearray(BLOCK)
    fd = os.open(obj / "00a", os.O_RDONLY)
    try:
        assert os.preadv(fd, [buf], size - BLOCK) == BLOCK
        assert bytes(buf[:7]) == b"payload" and os.fstat(fd).st_size == size
        try:
            os.preadv(fd, [memoryview(bytearray(1))], 0, os.RWF_NOWAIT)
        except OSError:
            pass  # EAGAIN/EOPNOTSUPP: sheep then reads in a thread
        a, b = socket.socketpair()
        with a, b:
            assert os.sendfile(a.fileno(), fd, size - BLOCK, 7) == 7
            assert b.recv(7) == b"payload"
        dst = os.open(obj / "00b", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            assert os.copy_file_range(fd, dst, 7, size - BLOCK, 0) == 7
            os.fdatasync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(fd)
    lock1 = os.open(m / "sheep.pid", os.O_RDWR | os.O_CREAT, 0o644)
    lock2 = os.open(m / "sheep.pid", os.O_RDWR)
    try:
        fcntl.flock(lock1, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock2, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(lock1)
        os.close(lock2)
    st = os.statvfs(m)
    assert st.f_blocks > 0 and st.f_bsize > 0
    pc.crash()
    pc.restart()
    assert (obj / "00a").stat().st_size == size
    with open(obj / "00a", "rb") as f:
        f.seek(size - BLOCK)
        assert f.read(7) == b"payload"
    assert not (obj / "00b").exists()  # its data was fsync'ed, its name never
    assert os.listdir(tmp) == []
    assert not (m / "sheep.pid").exists()
