"""A VM boots from a sheepblk VDI with Debian's own QEMU 7.2 under TCG
(issue 16): the disk of a 3-node copies=3 cluster, attached the two ways
today's QEMU can (NBD from our plugin, a sheepfs volume file).

The guest (tests/vm_guest.py: Debian's cloud kernel, an initramfs of
busybox, mkfs.ext4 and the virtio modules) makes ext4, writes a payload of
fresh random bytes, syncs, drops its caches and checks the payload's sha1
(passed on its kernel command line), deletes a scratch file and runs
fstrim, reboots and reads the payload again. Around it, the test checks
that fstrim shrank the VDI's used size in `dog vdi list`, and afterwards
that `e2fsck -fn` of the bytes `dog vdi read` gives is clean and that the
payload in that image is the one the VM wrote. A last test kills -9 a node
while the VM writes: no I/O error in the guest, and every copy it wrote is
intact after recovery.

Timings go to the "reported by tests" section of the run's output.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import vm_guest
from conftest import SheepFactory, SheepProcess, bin_path, run_dog
from test_cluster_daemon import node_count, three, wait_for, wait_settled
from test_nbd_plugin import export
from test_sheepfs import mounted
from vm_guest import GuestVM, Initramfs, build_initramfs

pytestmark = pytest.mark.skipif(vm_guest.missing_parts() is not None,
                                reason=f"VM boot: {vm_guest.missing_parts()}; "
                                       "scripts/setup.sh --test installs it")

MIB = 1 << 20
VDI_SIZE = 128 * MIB


@pytest.fixture
def cluster(sheep_factory: SheepFactory) -> list[SheepProcess]:
    nodes = three(sheep_factory, copies=3)
    with nodes[0].client() as c:
        c.create_vdi("Alice", VDI_SIZE)
    return nodes


@pytest.fixture
def initramfs(tmp_path: Path) -> Initramfs:
    return build_initramfs(tmp_path)


@pytest.fixture
def vm_factory(tmp_path: Path) -> Iterator[Callable[..., GuestVM]]:
    started: list[GuestVM] = []

    def start(ir: Initramfs, disk: list[str], mode: str) -> GuestVM:
        vm = GuestVM(ir, disk, mode, tmp_path / f"console{len(started)}.log")
        started.append(vm)
        return vm

    yield start
    for vm in started:
        vm.stop()


def used_bytes(node: SheepProcess) -> int:
    """The used size `dog vdi list -r` prints for Alice."""
    out = run_dog(node, "vdi", "list", "-r", "Alice").stdout.decode()
    fields = out.split()
    assert fields[:2] == ["=", "Alice"], out
    return int(fields[4])


def image_of(node: SheepProcess, path: Path) -> Path:
    """The VDI's bytes as `dog vdi read` gives them."""
    with path.open("wb") as out:
        subprocess.run([bin_path("dog"), "vdi", "read", "Alice", "-a", "127.0.0.1",
                        "-p", str(node.port)], stdout=out, check=True, timeout=300)
    return path


def check_image(image: Path, files: list[str], sha1: str) -> None:
    """e2fsck finds nothing, and each file in it has the payload's digest."""
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for name in files:
        dumped = image.parent / f"dumped-{name}"
        subprocess.run(["debugfs", "-R", f"dump /{name} {dumped}", str(image)],
                       capture_output=True, check=True)
        assert hashlib.sha1(dumped.read_bytes()).hexdigest() == sha1, name
        dumped.unlink()


def write_trim_reboot(vm: GuestVM, gateway: SheepProcess,
                      report: Callable[[str], None]) -> tuple[int, int]:
    """Drive the guest's "check" run; return the used size before and after fstrim."""
    vm.expect("BOOT fresh")
    booted = vm.elapsed()
    vm.expect("WRITTEN ok")
    written = vm.elapsed()
    vm.expect("WAIT used")
    before = used_bytes(gateway)
    vm.reply()
    vm.expect("WAIT trimmed")
    after = used_bytes(gateway)
    vm.reply()
    vm.expect("REBOOT")
    vm.expect("BOOT again")
    rebooted = vm.elapsed()
    vm.expect("READ-AGAIN ok")
    done = vm.expect("DONE")
    assert done == "SBK DONE errors=0", done
    assert vm.wait_exit() == 0
    report(f"boot {booted:.1f}s, mkfs+write+sync+re-read {written - booted:.1f}s, "
           f"reboot at {rebooted:.1f}s, powered off at {vm.elapsed():.1f}s; "
           f"used {before // MIB} MiB before fstrim, {after // MIB} MiB after")
    return before, after


NBD_WAYS = {
    # QEMU's legacy -drive with an NBD URI, cache=writeback (the default).
    "drive-writeback": lambda sock: [
        "-drive", f"file=nbd+unix:///?socket={sock},format=raw,if=virtio,"
                  "cache=writeback,discard=unmap"],
    # -blockdev, what libvirt emits, with cache=none's two settings.
    "blockdev-none": lambda sock: [
        "-blockdev", f"driver=nbd,server.type=unix,server.path={sock},node-name=sheep0,"
                     "cache.direct=on,cache.no-flush=off,discard=unmap",
        "-device", "virtio-blk-pci,drive=sheep0,write-cache=on"],
}


@pytest.mark.parametrize("way", sorted(NBD_WAYS))
def test_vm_on_nbd(way: str, cluster: list[SheepProcess], initramfs: Initramfs,
                   vm_factory: Callable[..., GuestVM], tmp_path: Path,
                   report_line: Callable[[str], None]) -> None:
    a = cluster[0]
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        vm = vm_factory(initramfs, NBD_WAYS[way](nk.sock), "check")
        before, after = write_trim_reboot(vm, a, report_line)
    assert after < before, f"fstrim freed nothing: used {before} then {after}"
    check_image(image_of(cluster[1], tmp_path / "vdi.img"), ["data"], initramfs.sha1)


def test_vm_on_sheepfs_volume(cluster: list[SheepProcess], initramfs: Initramfs,
                              vm_factory: Callable[..., GuestVM], tmp_path: Path,
                              report_line: Callable[[str], None]) -> None:
    """The same run on `-drive file=MNT/volume/Alice,format=raw`. fstrim
    runs and must not harm the data, but frees nothing here: a discard on a
    file becomes fallocate(PUNCH_HOLE), and pyfuse3 has no fallocate
    handler, so the kernel answers EOPNOTSUPP and QEMU drops the discard.
    Trim goes through NBD (the test above) or `dog vdi` instead."""
    a = cluster[0]
    with mounted(a, tmp_path) as mnt:
        vm = vm_factory(initramfs, ["-drive", f"file={mnt / 'volume/Alice'},format=raw,"
                                    "if=virtio,discard=unmap"], "check")
        write_trim_reboot(vm, a, report_line)
    check_image(image_of(cluster[2], tmp_path / "vdi.img"), ["data"], initramfs.sha1)


def test_vm_writes_through_a_node_killed(cluster: list[SheepProcess], initramfs: Initramfs,
                                         vm_factory: Callable[..., GuestVM], tmp_path: Path,
                                         report_line: Callable[[str], None]) -> None:
    """kill -9 of a node that is not the plugin's gateway while the guest
    copies its payload six times with a sync after each: the guest sees no
    error, and after the node is back and recovery is done every copy is
    whole in the bytes the restarted node serves."""
    a, b, c = cluster
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        vm = vm_factory(initramfs, NBD_WAYS["drive-writeback"](nk.sock), "stream")
        vm.expect("WROTE 1")
        b.kill9()
        killed = time.monotonic()
        wait_for(lambda: node_count(a) == 2, "2 nodes")
        new_epoch = time.monotonic() - killed
        done = vm.expect("DONE")
        assert done == "SBK DONE errors=0", done
        assert vm.wait_exit() == 0
        finished = time.monotonic() - killed
    b.start()
    wait_for(lambda: node_count(a) == 3, "3 nodes again")
    back = time.monotonic()
    wait_settled([a, b, c], 3)
    report_line(f"2 nodes {new_epoch:.1f}s after the kill; guest done {finished:.1f}s after it; "
                f"recovery after restart {time.monotonic() - back:.1f}s")
    check_image(image_of(b, tmp_path / "vdi.img"), [f"copy{n}" for n in range(1, 7)],
                initramfs.sha1)
