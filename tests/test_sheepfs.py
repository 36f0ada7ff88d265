"""sheepfs end to end: a real FUSE mount of a real sheep on a temp dir.

Every mount is undone in `finally` (fusermount3 -u, then the daemon is
killed by its pid); every VDI check that matters reads the bytes back
through the client, not through the mount that wrote them.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import logcheck
import pytest
from conftest import SheepProcess, bin_path, free_port

from sheepblk.client import SheepClient, SheepdogError, Vdi
from sheepblk.fs import status

MIB = 1 << 20
MOUNT_TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def unmount(path: Path) -> None:
    if is_mounted(path):
        r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Mount:
    """One `sheepfs -f` process and its mount point."""

    def __init__(self, node: SheepProcess, path: Path, *extra: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.log = path.parent / f"{path.name}.log"
        # stderr to a file, not a pipe nobody reads (a full pipe would block
        # sheepfs), and our descriptor closed at once: the child has its own.
        self.err = path.parent / f"{path.name}.err"
        logcheck.watch(self.log, logcheck.LOG)
        logcheck.watch(self.err, logcheck.STDERR)
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [bin_path("sheepfs"), str(path), "-f", "-p", str(node.port), "--log",
                 str(self.log), *extra], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"sheepfs exited with {self.proc.returncode}: "
                                   f"{self.err.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise TimeoutError("sheepfs did not mount")
            time.sleep(0.05)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def close(self) -> None:
        try:
            unmount(self.path)
        finally:
            stop_pid(self.proc)
            logcheck.collect(self.log)
            logcheck.collect(self.err)


@contextmanager
def mounted(node: SheepProcess, tmp: Path, name: str = "mnt", *extra: str) -> Iterator[Mount]:
    m = Mount(node, tmp / name, *extra)
    try:
        yield m
    finally:
        m.close()


def make_vdi(node: SheepProcess, name: str, size: int) -> int:
    with node.client() as c:
        return c.create_vdi(name, size)


def vdi_bytes(node: SheepProcess, name: str, length: int, offset: int = 0) -> bytes:
    with node.client() as c, Vdi(c, name, writable=False) as v:
        return bytes(v.pread(length, offset))


def dd(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["dd", "status=none", *args], capture_output=True, check=check,
                          timeout=300)


# ---- layout and status files ----

def test_layout(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with mounted(one_node, tmp_path) as m:
        assert sorted(os.listdir(m.path)) == ["cluster", "node", "vdi", "volume"]
        assert sorted(os.listdir(m / "vdi")) == ["list", "mount", "unmount"]
        assert sorted(os.listdir(m / "node")) == ["info", "list"]
        assert os.listdir(m / "cluster") == ["info"]
        assert os.listdir(m / "volume") == ["Alice"]
        st = os.stat(m / "volume/Alice")
        assert st.st_size == 16 * MIB and st.st_mode & 0o777 == 0o644


def dog_or_formatter(node: SheepProcess, args: list[str], fallback: str) -> str:
    """`dog`'s output if our dog is there, else what the formatter builds."""
    try:
        dog = bin_path("dog")
        r = subprocess.run([dog, *args, "-a", "127.0.0.1", "-p", str(node.port)],
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            return r.stdout.decode()
    except (FileNotFoundError, OSError):
        pass
    return fallback


def test_status_files_match_dog(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    make_vdi(one_node, "Bob", 8 * MIB)
    with mounted(one_node, tmp_path) as m, one_node.client() as c:
        for rel, args, gather in (
                ("node/list", ["node", "list"], status.gather_node_list),
                ("vdi/list", ["vdi", "list"], status.gather_vdi_list),
                ("cluster/info", ["cluster", "info"], status.gather_cluster_info),
                ("node/info", ["node", "info"], lambda c: status.gather_node_info(c, 5))):
            for _attempt in range(2):  # dates have minute resolution
                got = (m / rel).read_text()
                want = dog_or_formatter(one_node, args, gather(c))
                if got == want:
                    break
            assert got == want, rel
        assert "Alice" in (m / "vdi/list").read_text()
        assert f"127.0.0.1:{one_node.port}" in (m / "node/list").read_text()
        assert (m / "cluster/info").read_text().startswith("Cluster status: running")


def test_new_vdi_appears_without_remount(one_node: SheepProcess, tmp_path: Path) -> None:
    with mounted(one_node, tmp_path) as m:
        assert os.listdir(m / "volume") == []
        assert not (m / "volume/Carol").exists()
        make_vdi(one_node, "Carol", 12 * MIB)
        assert (m / "volume/Carol").stat().st_size == 12 * MIB
        assert os.listdir(m / "volume") == ["Carol"]
        assert "Carol" in (m / "vdi/list").read_text()


# ---- data ----

def test_large_io_matches_a_model(one_node: SheepProcess, tmp_path: Path) -> None:
    size = 48 * MIB
    make_vdi(one_node, "Alice", size)
    model = bytearray(size)
    src = tmp_path / "src"
    data = os.urandom(20 * MIB)
    src.write_bytes(data)
    with mounted(one_node, tmp_path) as m:
        vol = m / "volume/Alice"
        # dd-style 1 MiB writes, crossing object boundaries (4 MiB objects).
        dd(f"if={src}", f"of={vol}", "bs=1M", "seek=3", "conv=notrunc,fdatasync")
        model[3 * MIB:23 * MIB] = data
        # An unaligned write in the middle, and a direct one near the end.
        with open(vol, "r+b") as f:
            f.seek(5 * MIB + 123)
            f.write(b"x" * 300_000)
            os.fsync(f.fileno())
        model[5 * MIB + 123:5 * MIB + 123 + 300_000] = b"x" * 300_000
        dd(f"if={src}", f"of={vol}", "bs=1M", "count=4", f"seek={size // MIB - 4}",
           "oflag=direct", "conv=notrunc")
        model[size - 4 * MIB:] = data[:4 * MIB]
        assert vol.read_bytes() == model
        r = dd(f"if={vol}", "of=/dev/stdout", "bs=1M", "iflag=direct")
        assert r.stdout == model
    # Durable and visible to another client after the unmount.
    assert vdi_bytes(one_node, "Alice", size) == model


def test_sequential_reader_sees_writes_made_ahead_of_it(one_node: SheepProcess,
                                                       tmp_path: Path) -> None:
    """sheepfs reads objects ahead of a sequential reader: a write through
    the mount into what it already fetched must still be what it reads."""
    size = 32 * MIB
    make_vdi(one_node, "Alice", size)
    model = bytearray(os.urandom(size))
    with mounted(one_node, tmp_path) as m:
        vol = m / "volume/Alice"
        with open(vol, "r+b") as f:
            f.write(model)
            os.fsync(f.fileno())
        rfd = os.open(vol, os.O_RDONLY | os.O_DIRECT)
        wfd = os.open(vol, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, MIB)
        try:
            for i in range(size // MIB):
                if i % 3 == 1:
                    # Into the object being read, and into the next one.
                    for target in (i + 1, i + 4):
                        if target < size // MIB:
                            patch = os.urandom(MIB)
                            buf[:] = patch
                            assert os.pwritev(wfd, [buf], target * MIB) == MIB
                            model[target * MIB:(target + 1) * MIB] = patch
                assert os.preadv(rfd, [buf], i * MIB) == MIB
                assert buf[:] == model[i * MIB:(i + 1) * MIB], i
        finally:
            os.close(rfd)
            os.close(wfd)
        # Concurrent readers of both halves, buffered.
        r = subprocess.run(f"dd if={vol} bs=1M count=16 status=none | md5sum & "
                           f"dd if={vol} bs=1M skip=16 status=none | md5sum; wait",
                           shell=True, capture_output=True, check=True, timeout=120)
        sums = sorted(line.split()[0] for line in r.stdout.decode().splitlines())
        assert sums == sorted(hashlib.md5(model[a:a + 16 * MIB]).hexdigest()
                              for a in (0, 16 * MIB))
    assert vdi_bytes(one_node, "Alice", size) == model


def test_mkfs_fuse2fs_e2fsck(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 64 * MIB)
    files = {f"f{i}.bin": os.urandom(i * 100_000 + 17) for i in range(1, 6)}
    with mounted(one_node, tmp_path) as m:
        vol = m / "volume/Alice"
        subprocess.run(["mkfs.ext4", "-q", "-F", str(vol)], check=True, timeout=300)
        ext = tmp_path / "ext"
        ext.mkdir()
        subprocess.run(["fuse2fs", str(vol), str(ext), "-o", "fakeroot"], check=True,
                       timeout=120)
        try:
            for name, body in files.items():
                (ext / name).write_bytes(body)
            (ext / "dir").mkdir()
            (ext / "dir/hello").write_text("hello sheep\n")
        finally:
            unmount(ext)
        r = subprocess.run(["e2fsck", "-fn", str(vol)], capture_output=True, timeout=300)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        subprocess.run(["fuse2fs", str(vol), str(ext), "-o", "ro,fakeroot"], check=True,
                       timeout=120)
        try:
            for name, body in files.items():
                assert (ext / name).read_bytes() == body
            assert (ext / "dir/hello").read_text() == "hello sheep\n"
        finally:
            unmount(ext)


# ---- attach / detach ----

def test_vdi_mount_attaches_and_locks(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 8 * MIB)
    with mounted(one_node, tmp_path) as m, one_node.client() as c:
        (m / "vdi/mount").write_text("Alice\n")
        assert (m / "vdi/mount").read_text() == "Alice\n"
        with pytest.raises(Exception, match="locked"):
            c.lock_vdi("Alice")
        (m / "vdi/unmount").write_text("Alice\n")
        assert (m / "vdi/mount").read_text() == ""
        assert lockable(c, "Alice")


def test_write_open_locks_the_vdi(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 8 * MIB)
    with mounted(one_node, tmp_path) as m, one_node.client() as c:
        with open(m / "volume/Alice", "r+b") as f:
            with pytest.raises(Exception, match="locked"):
                c.lock_vdi("Alice")
            f.write(b"abc")
        # FUSE sends RELEASE after close(2) returns: the lock goes soon after.
        eventually(lambda: lockable(c, "Alice"))
        with open(m / "volume/Alice", "rb") as f:
            assert f.read(3) == b"abc"


def eventually(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for something the kernel does asynchronously (not a timing test:
    the bound only turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def lockable(c: SheepClient, name: str) -> bool:
    try:
        c.release_vdi(c.lock_vdi(name))
        return True
    except SheepdogError:
        return False


# ---- bad input ----

def expect_errno(err: int | tuple[int, ...], fn, *args) -> None:  # type: ignore[no-untyped-def]
    errs = err if isinstance(err, tuple) else (err,)
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno in errs, info.value


def test_write_past_the_end_changes_nothing(one_node: SheepProcess, tmp_path: Path) -> None:
    size = 8 * MIB
    make_vdi(one_node, "Alice", size)
    with mounted(one_node, tmp_path) as m:
        vol = m / "volume/Alice"
        fd = os.open(vol, os.O_RDWR)
        try:
            os.pwrite(fd, b"tail", size - 4)
            os.fsync(fd)
        finally:
            os.close(fd)

        def cached_write_past_end() -> None:
            fd = os.open(vol, os.O_RDWR)
            try:
                os.pwrite(fd, b"y" * 8192, size - 4096)
                os.fsync(fd)
            finally:
                os.close(fd)

        expect_errno((errno.ENOSPC, errno.EFBIG), cached_write_past_end)

        def direct_write_past_end() -> None:
            fd = os.open(vol, os.O_RDWR | os.O_DIRECT)
            try:
                import mmap
                buf = mmap.mmap(-1, MIB)
                os.pwritev(fd, [buf], size)
            finally:
                os.close(fd)

        expect_errno((errno.ENOSPC, errno.EFBIG), direct_write_past_end)
        r = dd("if=/dev/zero", f"of={vol}", "bs=1M", "count=1", f"seek={size // MIB}",
               "conv=notrunc,fsync", check=False)
        assert r.returncode != 0 and b"No space left" in r.stderr
        expect_errno(errno.EINVAL, os.truncate, vol, size // 2)
        expect_errno(errno.EINVAL, os.truncate, vol, size * 2)
        # The kernel grew its cached size when the rejected write entered the
        # page cache; sheepfs then gives the name a fresh inode.
        eventually(lambda: os.stat(vol).st_size == size)
        with open(vol, "rb") as f:
            f.seek(size - 4)
            assert f.read() == b"tail"
    data = vdi_bytes(one_node, "Alice", size)
    assert data[-4:] == b"tail" and data[:-4] == bytes(size - 4)


def test_bad_names_and_forbidden_operations(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 8 * MIB)
    with mounted(one_node, tmp_path) as m:
        for bad in (b"a/b\n", b"..\n", b"a\0b\n", b"\n", b"x" * 300 + b"\n"):
            def write_ctl(data: bytes = bad) -> None:
                fd = os.open(m / "vdi/mount", os.O_WRONLY)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            expect_errno(errno.EINVAL, write_ctl)
        expect_errno(errno.ENOENT, (m / "vdi/mount").write_text, "Nobody\n")
        expect_errno(errno.ENOENT, (m / "vdi/unmount").write_text, "Alice\n")
        expect_errno(errno.ENOENT, os.stat, m / "volume/Nobody")
        expect_errno(errno.ENOENT, os.stat, m / "volume/Alice@nosuchtag")
        expect_errno(errno.ENOENT, os.stat, m / "volume/...")
        expect_errno((errno.EACCES, errno.EPERM), (m / "vdi/list").write_text, "x")
        expect_errno(errno.EPERM, (m / "volume/New").write_bytes, b"x")
        expect_errno((errno.EPERM, errno.ENOSYS), os.unlink, m / "volume/Alice")
        expect_errno((errno.EPERM, errno.ENOSYS), os.mkdir, m / "volume/d")
        assert (m / "volume/Alice").stat().st_size == 8 * MIB


def test_second_mount_is_refused(one_node: SheepProcess, tmp_path: Path) -> None:
    with mounted(one_node, tmp_path) as m:
        r = subprocess.run([bin_path("sheepfs"), str(m.path), "-p", str(one_node.port)],
                           capture_output=True, timeout=60)
        assert r.returncode != 0
        assert b"already a mount point" in r.stderr
        assert (m / "vdi/list").read_text().startswith("  Name")


def test_no_sheep_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    r = subprocess.run([bin_path("sheepfs"), str(tmp_path / "mnt"), "-p", str(free_port())],
                       capture_output=True, timeout=60)
    assert r.returncode != 0 and b"cannot reach sheep" in r.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_status_fails_fast_when_the_sheep_is_gone(one_node: SheepProcess,
                                                  tmp_path: Path) -> None:
    with mounted(one_node, tmp_path) as m:
        assert (m / "vdi/list").read_text().startswith("  Name")
        one_node.stop()
        t0 = time.monotonic()
        for rel in ("vdi/list", "node/list", "node/info", "cluster/info"):
            expect_errno(errno.EIO, (m / rel).read_text)
        assert time.monotonic() - t0 < 120  # bounded, not a hang (no tight threshold)
        assert sorted(os.listdir(m.path)) == ["cluster", "node", "vdi", "volume"]


def test_status_fails_when_the_sheep_hangs(one_node: SheepProcess, tmp_path: Path) -> None:
    with mounted(one_node, tmp_path) as m:
        os.kill(one_node.pid, signal.SIGSTOP)
        try:
            expect_errno(errno.EIO, (m / "vdi/list").read_text)
        finally:
            os.kill(one_node.pid, signal.SIGCONT)


# ---- shutdown ----

def test_sigterm_writes_back_and_flushes(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    payload = os.urandom(3 * MIB + 5)
    with mounted(one_node, tmp_path) as m:
        # A writer that leaves its data in the page cache and stays open.
        fd = os.open(m / "volume/Alice", os.O_RDWR)
        try:
            os.pwrite(fd, payload, MIB)
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(60)
            assert m.proc.returncode == 0
            assert not is_mounted(m.path)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
    assert vdi_bytes(one_node, "Alice", len(payload), MIB) == payload
    with one_node.client() as c:  # the lock was released
        assert lockable(c, "Alice")


def test_fusermount_unmount_flushes(one_node: SheepProcess, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    payload = os.urandom(2 * MIB)
    with mounted(one_node, tmp_path) as m:
        (m / "vdi/mount").write_text("Alice\n")
        with open(m / "volume/Alice", "r+b") as f:
            f.write(payload)
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
        m.proc.wait(60)
        assert m.proc.returncode == 0
    assert vdi_bytes(one_node, "Alice", len(payload)) == payload
    with one_node.client() as c:
        assert lockable(c, "Alice")


def test_a_reply_the_kernel_dropped_is_no_error() -> None:
    """pyfuse3's error for a reply the kernel no longer waits for (ENOENT:
    an asynchronous RELEASE still served when `fusermount3 -u` ended the
    session) is a debug line in sheepfs's log; its other errors stay."""
    import logging

    from sheepblk.fs.mount import QuietDroppedReplies

    quiet = QuietDroppedReplies()

    def record(fmt: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("pyfuse3", logging.ERROR, "handlers.pxi", 514, fmt, args, None)

    dropped = record("fuse_release(): fuse_reply_* failed with %s", os.strerror(errno.ENOENT))
    assert not quiet.filter(dropped)  # the logger is not at debug level
    assert dropped.levelno == logging.DEBUG
    raw = record("fuse_write(): fuse_reply_* failed with %s", os.strerror(errno.ENOENT).encode())
    logging.getLogger("pyfuse3").setLevel(logging.DEBUG)
    try:
        assert quiet.filter(raw) and raw.levelname == "DEBUG"
    finally:
        logging.getLogger("pyfuse3").setLevel(logging.NOTSET)
    for other in (record("fuse_read(): fuse_reply_* failed with %s", os.strerror(errno.EIO)),
                  record("Failed to submit %s", "x")):
        assert quiet.filter(other) and other.levelno == logging.ERROR


def test_daemon_mode_returns_with_the_mount_up(one_node: SheepProcess, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    make_vdi(one_node, "Alice", 8 * MIB)
    r = subprocess.run([bin_path("sheepfs"), str(mnt), "-p", str(one_node.port)],
                       capture_output=True, timeout=60)
    pid = daemon_pid(mnt)
    try:
        assert r.returncode == 0, r.stderr
        assert (mnt / "volume/Alice").stat().st_size == 8 * MIB
    finally:
        unmount(mnt)
        if pid:
            wait_gone(pid)


def daemon_pid(mnt: Path) -> int | None:
    """The sheepfs daemon serving `mnt` (found by its unique command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"sheepfs" in a for a in cmd[:2]) and str(mnt).encode() in cmd:
            return int(entry.name)
    return None


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return
        except OSError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


# ---- snapshots ----

def test_snapshot_files_are_read_only(one_node: SheepProcess, tmp_path: Path) -> None:
    from conftest import run_dog

    make_vdi(one_node, "Alice", 8 * MIB)
    with mounted(one_node, tmp_path) as m:
        vol = m / "volume/Alice"
        with open(vol, "r+b") as f:
            f.write(b"before" * 1000)
        run_dog(one_node, "vdi", "snapshot", "-s", "snap1", "Alice")
        with open(vol, "r+b") as f:
            f.write(b"after!" * 1000)
        run_dog(one_node, "vdi", "snapshot", "Alice")  # untagged: NAME@ID
        names = sorted(os.listdir(m / "volume"))
        assert names[0] == "Alice" and "Alice@snap1" in names and len(names) == 3
        untagged = next(n for n in names if n not in ("Alice", "Alice@snap1"))
        assert untagged.split("@")[1].isdigit()
        snap = m / "volume/Alice@snap1"
        assert snap.stat().st_mode & 0o777 == 0o444
        assert snap.stat().st_size == 8 * MIB
        assert snap.read_bytes()[:6000] == b"before" * 1000
        assert (m / "volume" / untagged).read_bytes()[:6000] == b"after!" * 1000
        expect_errno(errno.EROFS, os.open, snap, os.O_RDWR)
        expect_errno(errno.EROFS, os.open, snap, os.O_WRONLY)
        expect_errno(errno.EROFS, (m / "vdi/mount").write_text, "Alice@snap1\n")
        assert vol.read_bytes()[:6000] == b"after!" * 1000
    with one_node.client() as c, Vdi(c, "Alice", tag="snap1", writable=False) as v:
        assert bytes(v.pread(6000, 0)) == b"before" * 1000


def test_writer_open_across_a_snapshot_follows_the_new_vdi(one_node: SheepProcess,
                                                          tmp_path: Path) -> None:
    from conftest import run_dog

    make_vdi(one_node, "Alice", 8 * MIB)
    with mounted(one_node, tmp_path) as m:
        fd = os.open(m / "volume/Alice", os.O_RDWR)
        try:
            os.pwrite(fd, b"A" * 4096, 0)
            os.fsync(fd)
            run_dog(one_node, "vdi", "snapshot", "-s", "s1", "Alice")
            os.pwrite(fd, b"B" * 4096, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    with one_node.client() as c:
        with Vdi(c, "Alice", tag="s1", writable=False) as v:
            assert bytes(v.pread(4096, 0)) == b"A" * 4096
        with Vdi(c, "Alice", writable=False) as v:
            assert bytes(v.pread(4096, 0)) == b"B" * 4096
        assert lockable(c, "Alice")
