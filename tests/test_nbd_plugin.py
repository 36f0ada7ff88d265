"""End-to-end tests of the nbdkit plugin: real nbdkit, real sheep, real peers.

Peers: libnbd's Python binding (Debian's python3-libnbd, so run under
/usr/bin/python3 in a subprocess), nbdinfo, nbdcopy, qemu-img, nbdfuse with
mkfs.ext4 / fuse2fs / e2fsck. nbdkit listens on a unix socket in the test's
directory and runs in the foreground with --exit-with-parent; every process
is stopped by its pid and every FUSE mount is unmounted in a finally.

Not here yet: a node dying during a write stream (needs the multi-node
cluster).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import logcheck
import pytest
from conftest import wait_for
from procs import terminate

from sheepblk.client import SheepClient, Vdi
from sheepblk.proto import vid_to_vdi_oid

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "sheepblk/nbd_plugin.py"  # relative: the documented command, run from ROOT
DEBIAN_PY = "/usr/bin/python3"
MIB = 1 << 20
OBJ = 4 * MIB
START_TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit not installed")


# ---- helpers ----


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise ConnectionError(f"nbdkit closed after {len(buf)} of {n} bytes")
        buf += got
    return buf


def nbd_probe(sock: Path) -> None:
    """Check that nbdkit serves on `sock`, leaving as a polite client does:
    NBD_OPT_ABORT, then read its ACK. A client that closes in the middle of
    the handshake makes nbdkit log an error ("sending newstyle handshake:
    Broken pipe"), which the test's log check would count."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        if _recv_exact(s, 18)[:16] != b"NBDMAGICIHAVEOPT":  # + the handshake flags
            raise ConnectionError("not an NBD newstyle server")
        s.sendall(struct.pack(">I", 1))  # NBD_FLAG_C_FIXED_NEWSTYLE
        s.sendall(b"IHAVEOPT" + struct.pack(">II", 2, 0))  # NBD_OPT_ABORT, no data
        _recv_exact(s, 20)  # its reply: magic, option, NBD_REP_ACK, length 0


class Nbdkit:
    """One `nbdkit -f python sheepblk/nbd_plugin.py ...` on a unix socket."""

    def __init__(self, sock: Path, params: list[str], *, cwd: Path = ROOT,
                 plugin: str = PLUGIN, extra: list[str] | None = None) -> None:
        self.sock = sock
        self.err = sock.with_suffix(".err")
        self.cmd = ["nbdkit", "-f", "--exit-with-parent", "-U", str(sock), *(extra or []),
                    "python", plugin, *params]
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.sock}"

    def start(self) -> Nbdkit:
        logcheck.watch(self.err, logcheck.NBDKIT_STDERR)
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=subprocess.DEVNULL,
                                         stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbdkit exited {self.proc.returncode}: {self.stderr()}")
            if self.sock.exists():
                try:
                    nbd_probe(self.sock)
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("nbdkit did not listen")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc, 20)
        logcheck.collect(self.err)


@contextmanager
def export(tmp: Path, port: int, *params: str, name: str = "nbd",
           **kw: object) -> Iterator[Nbdkit]:
    nk = Nbdkit(tmp / f"{name}.sock", [*params, f"address=127.0.0.1:{port}"], **kw)  # type: ignore[arg-type]
    nk.start()
    try:
        yield nk
    finally:
        nk.stop()


def start_fails(tmp: Path, port: int | None, *params: str) -> str:
    """Run an export that must refuse to start; return its stderr."""
    args = list(params) + ([f"address=127.0.0.1:{port}"] if port else [])
    cmd = ["nbdkit", "-f", "--exit-with-parent", "-U", str(tmp / "fail.sock"), "python", PLUGIN,
           *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stderr
    return r.stderr


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def libnbd(sock: Path, body: str, *args: object, timeout: float = 600) -> str:
    """Run `body` under Debian's python with `h` connected to `sock`."""
    prelude = ("import nbd, os, random, sys\n"
               "h = nbd.NBD()\n"
               "h.connect_unix(sys.argv[1])\n"
               "argv = sys.argv[2:]\n")
    r = subprocess.run([DEBIAN_PY, "-c", prelude + body, str(sock), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def make_vdi(node, name: str, size: int) -> int:  # type: ignore[no-untyped-def]
    with node.client() as c:
        return c.create_vdi(name, size)


def allocated(node, name: str) -> int:  # type: ignore[no-untyped-def]
    with node.client() as c, Vdi(c, name, writable=False) as v:
        return v.allocated_objects()


def nbd_map(uri: str) -> list[tuple[int, int, str]]:
    """nbdinfo --map: (offset, length, description) of base:allocation."""
    out = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        rows.append((int(parts[0]), int(parts[1]), parts[3] if len(parts) > 3 else "data"))
    return rows


# ---- starting, stopping, locking ----


def test_documented_command_exports_a_vdi(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 64 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        out = libnbd(nk.sock, (
            "print(h.get_size(), h.can_multi_conn(), h.can_fua(), h.can_trim(),"
            " h.can_zero(), h.can_flush(), h.can_cache(), h.is_read_only())\n"))
    assert out.split() == [str(64 * MIB), "True", "True", "True", "True", "True", "True",
                           "False"]


def test_start_errors_are_one_line(one_node, tmp_path: Path) -> None:
    assert "No VDI found" in one_line(start_fails(tmp_path, one_node.port, "vdi=Nobody"))
    assert "vdi=NAME is required" in one_line(start_fails(tmp_path, one_node.port))
    assert "unknown parameter 'size'" in one_line(
        start_fails(tmp_path, one_node.port, "vdi=Alice", "size=1G"))
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # a port nobody listens on
    try:
        line = one_line(start_fails(tmp_path, dead.getsockname()[1], "vdi=Alice"))
    finally:
        dead.close()
    assert "cannot connect" in line


def test_second_export_is_refused_and_lock_released_at_exit(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice"):
        line = one_line(start_fails(tmp_path, one_node.port, "vdi=Alice"))
        assert "VDI is locked" in line
        with one_node.client() as c, pytest.raises(Exception, match="VDI is locked"):
            c.lock_vdi("Alice")
    # nbdkit released the lock when it exited: a new export starts.
    with export(tmp_path, one_node.port, "vdi=Alice", name="again") as nk:
        assert libnbd(nk.sock, "print(h.get_size())\n").strip() == str(16 * MIB)


def test_background_nbdkit_keeps_the_lock(one_node, tmp_path: Path) -> None:
    """Without -f nbdkit forks after get_ready: the child must keep the lock
    and the connections the parent opened."""
    make_vdi(one_node, "Alice", 16 * MIB)
    pidfile, sock = tmp_path / "nbdkit.pid", tmp_path / "bg.sock"
    subprocess.run(["nbdkit", "-P", str(pidfile), "-U", str(sock), "python", PLUGIN,
                    "vdi=Alice", f"address=127.0.0.1:{one_node.port}"],
                   cwd=ROOT, check=True, timeout=60)
    deadline = time.monotonic() + START_TIMEOUT
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        assert "VDI is locked" in one_line(start_fails(tmp_path, one_node.port, "vdi=Alice"))
        out = libnbd(sock, "h.pwrite(b'x' * 4096, 0)\nh.flush()\nprint(bytes(h.pread(4, 0)))\n")
        assert out.strip() == "b'xxxx'"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while True:  # the lock goes when the background nbdkit is gone
        with one_node.client() as c:
            try:
                vid = c.lock_vdi("Alice")
                c.release_vdi(vid)
                break
            except Exception:
                assert time.monotonic() < deadline, "lock never released"
                time.sleep(0.1)


def test_plugin_runs_from_another_directory_and_prefers_its_own_package(
        one_node, tmp_path: Path) -> None:
    """As from an installed package: a copy of the package elsewhere, run from
    a directory whose own `sheepblk` would be the wrong one."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "sheepblk", site / "sheepblk",
                    ignore=shutil.ignore_patterns("__pycache__"))
    decoy = tmp_path / "cwd" / "sheepblk"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the wrong sheepblk')\n")
    make_vdi(one_node, "Alice", 8 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice", cwd=tmp_path / "cwd",
                plugin=str(site / "sheepblk" / "nbd_plugin.py")) as nk:
        assert libnbd(nk.sock, "print(h.get_size())\n").strip() == str(8 * MIB)


# ---- data ----

RANDOM_IO = r"""
size, seed, rounds = int(argv[0]), int(argv[1]), int(argv[2])
OBJ = 4 << 20
rnd = random.Random(seed)
model = bytearray(size)
assert h.get_size() == size
for i in range(rounds):
    if rnd.random() < 0.4:
        off = rnd.randrange(1, size // OBJ) * OBJ - rnd.randrange(0, 65536)
    else:
        off = rnd.randrange(0, size)
    n = max(1, min(rnd.choice([1, 512, 4096, 65536, 1 << 20, 5 << 20, 9 << 20]), size - off))
    op = rnd.random()
    if op < 0.4:
        data = rnd.randbytes(n)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if rnd.random() < 0.1 else 0)
        model[off:off + n] = data
    elif op < 0.75:
        got = h.pread(n, off)
        assert got == model[off:off + n], f"round {i}: read {n} at {off} differs"
    elif op < 0.9:
        h.zero(n, off, rnd.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FUA]))
        model[off:off + n] = bytes(n)
    else:
        h.trim(n, off)
        model[off:off + n] = bytes(n)
    if rnd.random() < 0.05:
        h.flush()
h.flush()
for off in range(0, size, 8 << 20):
    assert h.pread(min(8 << 20, size - off), off) == model[off:off + (8 << 20)], off
import hashlib
print(hashlib.sha256(model).hexdigest())
"""

READ_ALL = r"""
import hashlib
size, d = h.get_size(), hashlib.sha256()
for off in range(0, size, 8 << 20):
    d.update(h.pread(min(8 << 20, size - off), off))
print(d.hexdigest())
"""


def test_random_io_matches_a_model(one_node, tmp_path: Path) -> None:
    size = 48 * MIB
    make_vdi(one_node, "Alice", size)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        digest = libnbd(nk.sock, RANDOM_IO, size, 1234, 300).strip()
    # and what a fresh export reads back after nbdkit exited
    with export(tmp_path, one_node.port, "vdi=Alice", name="again") as nk:
        assert libnbd(nk.sock, READ_ALL).strip() == digest


PARALLEL_IO = r"""
size, seed = int(argv[0]), int(argv[1])
rnd = random.Random(seed)
slots = list(range(0, size, 192 << 10))  # 192 KiB slots: some cross objects
rnd.shuffle(slots)
data = {off: rnd.randbytes(192 << 10) for off in slots}
inflight = []
for off in slots:
    while h.aio_in_flight() >= 16:
        h.poll(-1)
    inflight.append(h.aio_pwrite(data[off], off))
while h.aio_in_flight():
    h.poll(-1)
bufs = {}
for off in slots:
    while h.aio_in_flight() >= 16:
        h.poll(-1)
    bufs[off] = nbd.Buffer(192 << 10)
    h.aio_pread(bufs[off], off)
while h.aio_in_flight():
    h.poll(-1)
for off in slots:
    assert bufs[off].to_bytearray() == data[off], off
print("ok")
"""


def test_sixteen_requests_in_flight(one_node, tmp_path: Path) -> None:
    size = 24 * MIB
    make_vdi(one_node, "Alice", size)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        assert libnbd(nk.sock, PARALLEL_IO, size, 7).strip() == "ok"


def test_writeback_off_and_flush(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 8 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice", "writeback=false") as nk:
        libnbd(nk.sock, "h.pwrite(b'y' * 8192, 4 << 20)\nh.flush()\n")
    with one_node.client() as c, Vdi(c, "Alice", writable=False) as v:
        assert bytes(v.pread(8192, 4 * MIB)) == b"y" * 8192


# ---- allocation: extents, trim, zero ----


def test_extents_show_holes_and_trim_frees_objects(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 32 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        assert nbd_map(nk.uri) == [(0, 32 * MIB, "hole,zero")]
        libnbd(nk.sock, "h.pwrite(b'a' * 4096, 4 << 20)\nh.pwrite(b'b' * 4096, 20 << 20)\n"
                        "h.flush()\n")
        assert nbd_map(nk.uri) == [
            (0, 4 * MIB, "hole,zero"), (4 * MIB, 4 * MIB, "data"),
            (8 * MIB, 12 * MIB, "hole,zero"), (20 * MIB, 4 * MIB, "data"),
            (24 * MIB, 8 * MIB, "hole,zero")]
        assert allocated(one_node, "Alice") == 2
        # a trim of part of an object zeroes it and keeps it
        libnbd(nk.sock, "h.trim(8192, 20 << 20)\n"
                        "assert h.pread(4096, 20 << 20) == bytes(4096)\n")
        assert allocated(one_node, "Alice") == 2
        # a trim of whole objects frees them
        libnbd(nk.sock, "h.trim(8 << 20, 16 << 20)\nh.flush()\n"
                        "assert h.pread(4096, 20 << 20) == bytes(4096)\n")
        assert allocated(one_node, "Alice") == 1
        # zero with may_trim frees; zero with NO_HOLE keeps the object
        libnbd(nk.sock, "h.zero(4 << 20, 4 << 20, nbd.CMD_FLAG_NO_HOLE)\n"
                        "assert h.pread(4096, 4 << 20) == bytes(4096)\n")
        assert allocated(one_node, "Alice") == 1
        libnbd(nk.sock, "h.zero(4 << 20, 4 << 20)\n")
        assert allocated(one_node, "Alice") == 0
        assert nbd_map(nk.uri) == [(0, 32 * MIB, "hole,zero")]


def test_fast_zero_refuses_only_when_it_would_write(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        out = libnbd(nk.sock, (
            "h.pwrite(b'z' * 4096, 0)\n"
            "h.zero(8 << 20, 8 << 20, nbd.CMD_FLAG_FAST_ZERO)\n"  # holes: fast
            "h.zero(4 << 20, 0, nbd.CMD_FLAG_FAST_ZERO)\n"  # a whole object: freed, fast
            "h.pwrite(b'z' * 4096, 0)\n"
            "try:\n"
            "    h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)\n"
            "    print('zeroed')\n"
            "except nbd.Error as e:\n"
            "    print(e.errno)\n"
            "assert h.pread(4096, 0) == b'z' * 4096\n"))
        assert out.strip() in ("EOPNOTSUPP", "ENOTSUP", str(95))


def test_cache_prefetches(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        libnbd(nk.sock, "h.pwrite(b'c' * 4096, 0)\nh.cache(16 << 20, 0)\n"
                        "assert h.pread(4096, 0) == b'c' * 4096\n")


# ---- real peers: qemu-img, nbdcopy, nbdfuse + ext4 ----


def sparse_image(path: Path, size: int, seed: int = 1) -> None:
    """Random data in a few places (some crossing objects), holes elsewhere."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, 3 * MIB, 7 * MIB + 4096, 30 * MIB):
            f.seek(off)
            f.write(rnd.randbytes(2 * MIB))


def test_qemu_img_convert_round_trip(one_node, tmp_path: Path) -> None:
    size = 40 * MIB
    src, back = tmp_path / "src.raw", tmp_path / "back.raw"
    sparse_image(src, size)
    make_vdi(one_node, "Alice", size)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), nk.uri],
                       check=True, capture_output=True, timeout=300)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", nk.uri, str(back)],
                       check=True, capture_output=True, timeout=300)
    assert sha256(back) == sha256(src)
    # qemu-img skipped the holes: objects 0-2 and 7 hold data, nothing else
    assert allocated(one_node, "Alice") == 4


def test_nbdcopy_round_trip(one_node, tmp_path: Path) -> None:
    size = 40 * MIB
    src, back = tmp_path / "src.raw", tmp_path / "back.raw"
    sparse_image(src, size, seed=2)
    make_vdi(one_node, "Alice", size)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        subprocess.run(["nbdcopy", str(src), nk.uri], check=True, capture_output=True,
                       timeout=300)
        back.touch()
        subprocess.run(["nbdcopy", nk.uri, str(back)], check=True, capture_output=True,
                       timeout=300)
    assert sha256(back) == sha256(src)


def unmount(path: Path, tool: str) -> None:
    if os.path.ismount(path):
        subprocess.run([tool, "-u", str(path)], check=False, capture_output=True, timeout=60)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _background(args: list[str], err: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground mode with stderr in a file (a pipe
    nobody reads could fill and block it); our copy of the file closes."""
    with open(err, "wb") as f:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_ext4_through_nbdfuse_and_fuse2fs(one_node, tmp_path: Path) -> None:
    size = 64 * MIB
    make_vdi(one_node, "Alice", size)
    fdir, mnt = tmp_path / "fuse", tmp_path / "mnt"
    fdir.mkdir()
    mnt.mkdir()
    image = fdir / "nbd"
    payload = os.urandom(3 * MIB + 17)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        nbdfuse = _background(["nbdfuse", "-P", str(tmp_path / "nbdfuse.pid"), str(fdir),
                               "--unix", str(nk.sock)], tmp_path / "nbdfuse.err")
        fuse2fs = None
        try:
            wait_for(lambda: (tmp_path / "nbdfuse.pid").exists() and os.path.ismount(fdir),
                     "nbdfuse mounted", START_TIMEOUT)
            assert image.stat().st_size == size
            subprocess.run(["mkfs.ext4", "-F", "-q", str(image)], check=True,
                           capture_output=True, timeout=300)
            fuse2fs = _background(["fuse2fs", "-f", str(image), str(mnt)],
                                  tmp_path / "fuse2fs.err")
            wait_for(lambda: os.path.ismount(mnt), "fuse2fs mounted", START_TIMEOUT)
            (mnt / "dir").mkdir()
            (mnt / "dir" / "payload").write_bytes(payload)
            (mnt / "hello.txt").write_text("hello sheep\n")
            os.sync()
            unmount(mnt, "fusermount")
            fuse2fs.wait(60)
            r = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            # mount again read-only and read the files back
            fuse2fs = _background(["fuse2fs", "-f", str(image), str(mnt), "-o", "ro"],
                                  tmp_path / "fuse2fs-ro.err")
            wait_for(lambda: os.path.ismount(mnt), "fuse2fs mounted again", START_TIMEOUT)
            assert (mnt / "dir" / "payload").read_bytes() == payload
            assert (mnt / "hello.txt").read_text() == "hello sheep\n"
        finally:
            unmount(mnt, "fusermount")
            if fuse2fs is not None:
                stop(fuse2fs)
            unmount(fdir, "fusermount3")
            stop(nbdfuse)
    # what ext4 wrote is in the VDI, not only in a cache somewhere
    with one_node.client() as c, Vdi(c, "Alice", writable=False) as v:
        assert bytes(v.pread(2, 1024 + 0x38)) == b"\x53\xef"  # the ext4 superblock magic


# ---- read-only exports: snapshots and shared ----


def take_snapshot(client: SheepClient, name: str, tag: str) -> int:
    """As dog does: write the tag into the working inode, then snapshot."""
    info = client.lookup_vdi(name)
    client.write_obj(vid_to_vdi_oid(info.vid), tag.encode().ljust(256, b"\0"), 256)
    size = client.read_inode_header(info.vid).vdi_size
    return client.create_vdi(name, size, base_vid=info.vid, snapshot=True)


def test_snapshot_export_is_read_only_and_frozen(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with one_node.client() as c:
        with Vdi(c, "Alice", lock=True) as v:
            v.pwrite(b"old!" * 1024, 4 * MIB)
        take_snapshot(c, "Alice", "before")
        with Vdi(c, "Alice", lock=True) as v:
            v.pwrite(b"new!" * 1024, 4 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice", "snapshot=before") as snap, \
            export(tmp_path, one_node.port, "vdi=Alice", name="live") as live, \
            export(tmp_path, one_node.port, "vdi=Alice", "snapshot=before", name="snap2") as s2:
        body = "print(h.is_read_only(), bytes(h.pread(4, 4 << 20)))\n"
        assert libnbd(snap.sock, body).split() == ["True", "b'old!'"]
        assert libnbd(s2.sock, body).split() == ["True", "b'old!'"]
        assert libnbd(live.sock, body).split() == ["False", "b'new!'"]
        out = libnbd(snap.sock, "try:\n    h.pwrite(b'x', 0)\nexcept nbd.Error as e:\n"
                                "    print(e.errno)\n")
        assert out.strip() in ("EPERM", "EROFS")  # the export is read-only


def test_shared_export_reads_beside_the_lock_holder(one_node, tmp_path: Path) -> None:
    make_vdi(one_node, "Alice", 16 * MIB)
    with export(tmp_path, one_node.port, "vdi=Alice") as live:
        libnbd(live.sock, "h.pwrite(b'live' * 1024, 8 << 20)\nh.flush()\n")
        with export(tmp_path, one_node.port, "vdi=Alice", "shared=true", name="shared") as sh:
            assert libnbd(sh.sock, "print(h.is_read_only(), bytes(h.pread(4, 8 << 20)))\n").split() \
                == ["True", "b'live'"]
            # an object the lock holder allocates later shows up for a new connection
            libnbd(live.sock, "h.pwrite(b'late' * 1024, 0)\nh.flush()\n")
            assert libnbd(sh.sock, "print(bytes(h.pread(4, 0)))\n").strip() == "b'late'"
