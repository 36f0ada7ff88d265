"""The README's attach commands, run for real against a VDI of a one-node
cluster: `qemu-img convert -n` and `nbdcopy` into the plugin's NBD export,
`qemu-img create` on that export, `qemu-storage-daemon` re-exporting it
(NBD and vhost-user-blk), and QEMU's cache=none on a sheepfs volume (what
libvirt's cache='none' does). Every check reads the bytes back through the
client library, not through the path that wrote them.

Images are a few MiB with a hole, so each test takes a few seconds. Every
process is started here and stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import logcheck
import pytest
from conftest import SheepProcess
from procs import terminate
from test_nbd_plugin import Nbdkit, nbd_probe
from test_sheepfs import mounted

from sheepblk.client import Vdi

MIB = 1 << 20
SIZE = 12 * MIB  # three 4 MiB objects
START_TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("nbdkit", "qemu-img", "nbdcopy")),
    reason="needs nbdkit, qemu-img (qemu-utils) and nbdcopy (libnbd-bin)")


def pattern() -> bytes:
    """SIZE bytes: data, a 4 MiB hole (the middle object), data."""
    head = os.urandom(4 * MIB)
    tail = os.urandom(3 * MIB) + b"\x5a" * MIB
    return head + bytes(4 * MIB) + tail


def vdi_bytes(node: SheepProcess, name: str = "Alice") -> bytes:
    with node.client() as c, Vdi(c, name, writable=False) as v:
        return bytes(v.pread(SIZE, 0))


def run(*argv: str | Path) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run([str(a) for a in argv], capture_output=True, timeout=120)
    assert r.returncode == 0, f"{argv}: {r.stderr.decode(errors='replace')}"
    return r


@pytest.fixture
def alice(one_node: SheepProcess) -> SheepProcess:
    with one_node.client() as c:
        c.create_vdi("Alice", SIZE)
    return one_node


@pytest.fixture
def export(alice: SheepProcess, tmp_path: Path) -> Iterator[Nbdkit]:
    """`nbdkit python sheepblk/nbd_plugin.py vdi=Alice` on a unix socket, as
    sheepblk-nbd@Alice.service runs it."""
    nbd = Nbdkit(tmp_path / "Alice.sock", ["vdi=Alice", f"address=127.0.0.1:{alice.port}"])
    nbd.start()
    try:
        yield nbd
    finally:
        nbd.stop()


def test_qemu_img_convert_qcow2_into_export(alice: SheepProcess, export: Nbdkit,
                                           tmp_path: Path) -> None:
    data = pattern()
    (tmp_path / "disk.raw").write_bytes(data)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw",
        tmp_path / "image.qcow2")
    run("qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", tmp_path / "image.qcow2",
        export.uri)
    export.stop()
    assert vdi_bytes(alice) == data


def test_qemu_img_create_raw_on_export(alice: SheepProcess, export: Nbdkit) -> None:
    """qemu-img cannot make a VDI (`dog vdi create` does); on an existing
    export `create -f raw` checks the size fits and leaves the data alone
    but for the first sector it zeroes."""
    with alice.client() as c, Vdi(c, "Alice", writable=True, shared=True) as v:
        v.pwrite(b"\x11" * MIB, 4 * MIB)
        v.flush()
    run("qemu-img", "create", "-f", "raw", export.uri, str(SIZE))
    info = run("qemu-img", "info", "-f", "raw", "--output=json", export.uri)
    assert f'"virtual-size": {SIZE}' in info.stdout.decode()
    export.stop()
    assert vdi_bytes(alice)[4 * MIB:5 * MIB] == b"\x11" * MIB


def test_nbdcopy_into_export(alice: SheepProcess, export: Nbdkit, tmp_path: Path) -> None:
    data = pattern()
    (tmp_path / "disk.raw").write_bytes(data)
    run("nbdcopy", tmp_path / "disk.raw", export.uri)
    export.stop()
    assert vdi_bytes(alice) == data


class StorageDaemon:
    """One qemu-storage-daemon re-exporting the plugin's export: an NBD
    client block node (driver=nbd), a raw format node on it, and the export
    that `kind` names."""

    def __init__(self, upstream: Path, tmp: Path, export: list[str]) -> None:
        self.err = tmp / "qsd.err"
        argv = ["qemu-storage-daemon",
                "--blockdev", f"driver=nbd,node-name=sd0,server.type=unix,server.path={upstream}",
                "--blockdev", "driver=raw,node-name=alice,file=sd0", *export]
        logcheck.watch(self.err, logcheck.STDERR)
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)

    def wait_socket(self, sock: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu-storage-daemon exited {self.proc.returncode}: "
                                   f"{self.err.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise TimeoutError("qemu-storage-daemon did not listen")
            time.sleep(0.05)

    def stop(self) -> None:
        terminate(self.proc, 30)
        logcheck.collect(self.err)


needs_qsd = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None,
                               reason="qemu-storage-daemon not installed (qemu-system-common)")


@needs_qsd
def test_qemu_storage_daemon_nbd_export(alice: SheepProcess, export: Nbdkit,
                                        tmp_path: Path) -> None:
    sock = tmp_path / "qsd.sock"
    qsd = StorageDaemon(export.sock, tmp_path, [
        "--nbd-server", f"addr.type=unix,addr.path={sock}",
        "--export", "type=nbd,id=exp0,node-name=alice,name=Alice,writable=on"])
    try:
        qsd.wait_socket(sock)
        nbd_probe(sock)
        data = pattern()
        (tmp_path / "disk.raw").write_bytes(data)
        run("nbdcopy", tmp_path / "disk.raw", f"nbd+unix:///Alice?socket={sock}")
    finally:
        qsd.stop()
    export.stop()
    assert vdi_bytes(alice) == data


@needs_qsd
def test_qemu_storage_daemon_vhost_user_blk_export(export: Nbdkit, tmp_path: Path) -> None:
    """Only that it starts: a vhost-user-blk client is a VM (QEMU's
    -device vhost-user-blk-pci,chardev=...), which the VM boot test covers."""
    sock = tmp_path / "vhost.sock"
    qsd = StorageDaemon(export.sock, tmp_path, [
        "--export", f"type=vhost-user-blk,id=exp0,node-name=alice,"
                    f"addr.type=unix,addr.path={sock},writable=on"])
    try:
        qsd.wait_socket(sock)
        assert qsd.proc.poll() is None
    finally:
        qsd.stop()


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
@pytest.mark.parametrize("cache", ["none", "directsync", "writeback"])
def test_qemu_cache_modes_on_a_sheepfs_volume(alice: SheepProcess, tmp_path: Path,
                                             cache: str) -> None:
    """libvirt's <driver cache='none'/> opens the file with O_DIRECT: sheepfs
    volumes take it (the kernel's FUSE direct I/O), as they take the others."""
    data = pattern()
    (tmp_path / "disk.raw").write_bytes(data)
    with mounted(alice, tmp_path) as m:
        vol = m / "volume/Alice"
        run("qemu-img", "convert", "-n", "-t", cache, "-f", "raw", "-O", "raw",
            tmp_path / "disk.raw", vol)
        run("qemu-io", "-t", cache, "-f", "raw", "-c", f"write -P 0x77 {SIZE - MIB} 4096",
            "-c", "flush", vol)
    expect = data[:SIZE - MIB] + b"\x77" * 4096 + data[SIZE - MIB + 4096:]
    assert vdi_bytes(alice) == expect
