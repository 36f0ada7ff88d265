"""A tiny Linux guest for the VM boot tests: Debian's cloud kernel and an
initramfs made here from busybox-static, e2fsprogs' mkfs.ext4 and the
kernel's virtio modules, booted by Debian's qemu-system-x86_64 under TCG.

Why an initramfs of our own instead of a distribution image: nothing may be
downloaded at run time, and a guest whose only job is the disk boots in
seconds under TCG. Its /init (GUEST_INIT) is the whole workload; it talks to
the test over the serial console in lines that begin with "SBK ", and where
the test has to look at the cluster in the middle (the used size before and
after fstrim) it waits for a line back ("go").

The test process starts QEMU and stops it by its pid.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import terminate

QEMU = "qemu-system-x86_64"
# The drivers the guest needs; what they depend on is found with modinfo.
DRIVERS = ("virtio_pci", "virtio_blk")
# Programs copied in with the shared libraries they load.
PROGRAMS = ("/sbin/mkfs.ext4",)

# The guest's /init. Its kernel command line carries sbk.sha1 (the payload's
# digest, fresh each run) and sbk.mode: "check" makes a file system, writes,
# re-reads, trims and reboots into a boot that reads again; "stream" writes
# copies of the payload while the test kills a node, then reads them all.
GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
say() { echo "SBK $*"; }
fail() { say "FAIL $*"; dmesg | tail -20; sync; poweroff -f; sleep 60; }
ask() { say "WAIT $1"; read -r reply; [ "$reply" = go ] || fail "host said $reply"; }
for m in MODULES; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
i=0; while [ ! -b /dev/vda ]; do i=$((i+1)); [ $i -gt 100 ] && fail "no /dev/vda"; sleep 0.1; done
for kv in $(cat /proc/cmdline); do
  case $kv in sbk.sha1=*) SHA1=${kv#sbk.sha1=};; sbk.mode=*) MODE=${kv#sbk.mode=};; esac
done
check() {  # check FILE: the payload's digest, read from the disk and not the cache
  echo 3 > /proc/sys/vm/drop_caches
  got=$(sha1sum "$1" | cut -d' ' -f1)
  [ "$got" = "$SHA1" ] || fail "sha1 of $1 is $got, expected $SHA1"
}
io_errors() { dmesg | grep -ciE 'I/O error|blk_update_request|EXT4-fs error'; }
mkdir -p /mnt
if mount -t ext4 -o noatime /dev/vda /mnt 2>/dev/null; then
  say BOOT again
  check /mnt/data
  say READ-AGAIN ok
  umount /mnt
  say DONE errors=$(io_errors)
  poweroff -f
fi
say BOOT fresh
mkfs.ext4 -q -F -E nodiscard -L sbk /dev/vda || fail mkfs
mount -t ext4 -o noatime /dev/vda /mnt || fail mount
if [ "$MODE" = stream ]; then
  say WRITING
  for n in 1 2 3 4 5 6; do cp /payload /mnt/copy$n || fail "cp $n"; sync || fail "sync $n"; say WROTE $n; done
  for n in 1 2 3 4 5 6; do check /mnt/copy$n; done
  umount /mnt || fail umount
  say DONE errors=$(io_errors)
  poweroff -f
fi
cp /payload /mnt/data || fail "cp"
dd if=/dev/urandom of=/mnt/scratch bs=1M count=SCRATCH_MIB 2>/dev/null || fail "dd scratch"
sync || fail sync
check /mnt/data
say WRITTEN ok
ask used
rm /mnt/scratch
sync
fstrim -v /mnt || fail fstrim
ask trimmed
umount /mnt || fail umount
say REBOOT
reboot -f
"""


def kernel() -> tuple[Path, Path] | None:
    """Debian's cloud kernel and its module directory, or None."""
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"), reverse=True):
        moddir = Path("/lib/modules") / vmlinuz.name.removeprefix("vmlinuz-")
        if moddir.is_dir() and os.access(vmlinuz, os.R_OK):
            return vmlinuz, moddir
    return None


def missing_parts() -> str | None:
    """What a boot test lacks on this machine, said as a skip reason."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} (qemu-system-x86) not installed"
    if kernel() is None:
        return "no readable /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
    if not Path("/bin/busybox").exists() or "static" not in _file_kind("/bin/busybox"):
        return "no static /bin/busybox (busybox-static)"
    if not Path(PROGRAMS[0]).exists():
        return "no mkfs.ext4 (e2fsprogs)"
    return None


def _file_kind(path: str) -> str:
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    return "static" if r.returncode != 0 else "dynamic"


def _libraries(program: str) -> list[Path]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    return [Path(m) for m in re.findall(r"(/\S+\.so[.\d]*)", out)]


def _modinfo(release: str, fieldname: str, module: str) -> str:
    return subprocess.run(["modinfo", "-k", release, "-F", fieldname, module],
                          capture_output=True, text=True, check=True).stdout.strip()


def load_order(release: str, drivers: tuple[str, ...]) -> list[str]:
    """The drivers and every module they depend on, each after its
    dependencies (busybox's insmod does not resolve them)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in filter(None, _modinfo(release, "depends", name).split(",")):
            visit(dep)
        order.append(name)

    for d in drivers:
        visit(d)
    return order


@dataclass
class Initramfs:
    path: Path
    sha1: str        # the payload's digest, for the kernel command line
    payload: bytes = field(repr=False)


def build_initramfs(work: Path, payload_mib: int = 8, scratch_mib: int = 48) -> Initramfs:
    """Write a newc cpio archive holding busybox, mkfs.ext4 and its
    libraries, the virtio modules, /init and a payload of fresh random
    bytes; the kernel unpacks it uncompressed."""
    found = kernel()
    assert found is not None
    _, moddir = found
    root = work / "initramfs"
    for d in ("bin", "sbin", "proc", "sys", "dev", "lib/modules", "mnt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for program in PROGRAMS:
        dest = root / program.lstrip("/")
        shutil.copy2(program, dest)
        for lib in _libraries(program):
            target = root / str(lib).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), target)
    order = load_order(moddir.name, DRIVERS)
    for name in order:
        shutil.copy2(_modinfo(moddir.name, "filename", name), root / "lib" / "modules" / f"{name}.ko")
    init = GUEST_INIT.replace("MODULES", " ".join(order)).replace("SCRATCH_MIB", str(scratch_mib))
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    payload = os.urandom(payload_mib << 20)
    (root / "payload").write_bytes(payload)
    archive = work / "initramfs.cpio"
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with archive.open("wb") as out:
        subprocess.run(["/bin/busybox", "cpio", "-o", "-H", "newc"], cwd=root, input=names,
                       stdout=out, stderr=subprocess.DEVNULL, check=True)
    return Initramfs(archive, hashlib.sha1(payload).hexdigest(), payload)


class GuestVM:
    """One QEMU process: the serial console on its stdin and stdout, read
    line by line by a thread, so a test can wait for the guest's markers."""

    def __init__(self, initramfs: Initramfs, disk_args: list[str], mode: str,
                 log: Path) -> None:
        found = kernel()
        assert found is not None
        vmlinuz, _ = found
        append = (f"console=ttyS0 panic=-1 quiet loglevel=3 "
                  f"sbk.sha1={initramfs.sha1} sbk.mode={mode}")
        self.argv = [QEMU, "-accel", "tcg", "-m", "384", "-nodefaults", "-display", "none",
                     "-serial", "stdio", "-monitor", "none", "-kernel", str(vmlinuz),
                     "-initrd", str(initramfs.path), "-append", append, *disk_args]
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                self.lines.put(raw.decode(errors="replace").rstrip("\r\n"))
        self.lines.put(None)

    def expect(self, marker: str, timeout: float = 180.0) -> str:
        """Wait for the guest's line "SBK <marker>...", and return it; a
        FAIL line or QEMU's exit first is an error, with the console log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no 'SBK {marker}' in {timeout:.0f}s:\n{self.tail()}") from None
            if line is None:
                raise AssertionError(f"QEMU exited before 'SBK {marker}':\n{self.tail()}")
            if line.startswith("SBK FAIL"):
                raise AssertionError(f"the guest failed: {line}\n{self.tail()}")
            if line.startswith(f"SBK {marker}"):
                return line

    def reply(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def tail(self, n: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self) -> None:
        terminate(self.proc)
        self.reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass  # the guest never read what was written last
