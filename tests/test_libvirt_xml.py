"""The domain XML of docs/libvirt/ is what libvirt takes.

Each file passes `virt-xml-validate FILE domain` (libvirt's RelaxNG schema).
Then a real libvirtd defines each domain and gives it back (`virsh define`
then `virsh dumpxml`) with its disk source unchanged: libvirt's own parser
and the QEMU driver's checks, not only the schema. That libvirtd is a
session daemon run as `nobody` in a private directory (root's would be the
host's system daemon, with its state in /etc/libvirt): no systemd needed,
nothing outside the directory touched. It is started here and stopped by
its pid. Nothing is booted (the VM boot test does that), but `virsh start`
of the NBD and sheepfs domains runs QEMU far enough to open the disk, and
the NBD one writes through QEMU's block layer into the VDI. The copy it
defines says type='qemu' (TCG) instead of 'kvm': nobody may not open
/dev/kvm (root-only here), and the disks are what is checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SheepProcess
from procs import terminate

from sheepblk.client import Vdi

ROOT = Path(__file__).resolve().parent.parent
XML_DIR = ROOT / "docs" / "libvirt"
XMLS = sorted(p.name for p in XML_DIR.glob("*.xml"))
NOBODY = 65534

START_TIMEOUT = 30.0


def test_every_attach_way_has_a_file() -> None:
    assert {"alice-nbd.xml", "alice-sheepfs.xml", "alice-sheepdog.xml",
            "alice-vhost.xml"} <= set(XMLS)


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None,
                    reason="virt-xml-validate (libvirt-clients) or xmllint (libxml2-utils) "
                           "not installed: scripts/setup.sh --test installs both")
@pytest.mark.parametrize("name", XMLS)
def test_validates_against_libvirts_schema(name: str) -> None:
    r = subprocess.run(["virt-xml-validate", str(XML_DIR / name), "domain"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def disk_source(xml: str) -> str:
    """The <source ...> element of the first disk, whitespace normalised."""
    disk = re.search(r"<disk .*?</disk>", xml, re.S)
    assert disk is not None, xml
    src = re.search(r"<source .*?(?:/>|</source>)", disk.group(0), re.S)
    assert src is not None, disk.group(0)
    return " ".join(src.group(0).split())


class SessionLibvirtd:
    """`libvirtd` as nobody, with HOME and XDG_RUNTIME_DIR in `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/bin", f"HOME={home}",
                    f"XDG_RUNTIME_DIR={home}/run"]
        self.sock = home / "run" / "libvirt" / "libvirt-sock"
        self.log = open(home / "libvirtd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*self.as_nobody(), "/usr/sbin/libvirtd"], stdout=self.log, stderr=self.log,
            cwd=home)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("libvirtd did not start: "
                                   + (home / "libvirtd.log").read_text(errors="replace"))
            time.sleep(0.05)

    def as_nobody(self) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                *self.env]

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.as_nobody(), "virsh", "-c", "qemu:///session", *args],
                           capture_output=True, text=True, timeout=60, cwd=self.home)
        assert r.returncode == 0, f"virsh {args}: {r.stdout}{r.stderr}"
        return r

    def stop(self) -> None:
        terminate(self.proc, 30)
        self.log.close()


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[SessionLibvirtd]:
    missing = [t for t in ("/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64")
               if not os.path.exists(t)] + [t for t in ("virsh", "setpriv")
                                             if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup.sh --test "
                    "installs libvirt-daemon-system and qemu-system-x86)")
    if os.geteuid() != 0:
        pytest.skip("runs libvirtd as nobody, which needs root")
    home = Path(tempfile.mkdtemp(prefix="sheepblk-libvirt-"))
    os.chown(home, NOBODY, NOBODY)
    os.chmod(home, 0o700)
    daemon = SessionLibvirtd(home)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("name", XMLS)
def test_libvirtd_defines_and_dumps_it(libvirtd: SessionLibvirtd, name: str) -> None:
    text = (XML_DIR / name).read_text()
    copy = libvirtd.home / name
    copy.write_text(text.replace("<domain type='kvm'>", "<domain type='qemu'>"))
    os.chmod(copy, 0o644)
    domain = re.search(r"<name>(.*?)</name>", text)
    assert domain is not None
    libvirtd.virsh("define", str(copy))
    try:
        dumped = libvirtd.virsh("dumpxml", domain.group(1)).stdout
    finally:
        libvirtd.virsh("undefine", domain.group(1))
    assert disk_source(dumped) == disk_source(text)


# ---- virsh start: QEMU opens the disk and writes through it ----

SIZE = 8 << 20


def started_copy(libvirtd: SessionLibvirtd, name: str, replace: dict[str, str]) -> str:
    """Define a copy of docs/libvirt/NAME with its paths moved into the
    daemon's directory and a small TCG machine; start it; return its name."""
    text = (XML_DIR / name).read_text().replace("<domain type='kvm'>", "<domain type='qemu'>")
    text = text.replace("<memory unit='MiB'>1024</memory>", "<memory unit='MiB'>128</memory>")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    copy = libvirtd.home / name
    copy.write_text(text)
    os.chmod(copy, 0o644)
    domain = re.search(r"<name>(.*?)</name>", text)
    assert domain is not None
    libvirtd.virsh("define", str(copy))
    libvirtd.virsh("start", domain.group(1))
    return domain.group(1)


def write_through_qemu(libvirtd: SessionLibvirtd, domain: str) -> None:
    """Write 64 KiB of 0x5a at 1 MiB through the running QEMU's block layer
    (HMP qemu-io on the guest's disk), then flush: no guest needed."""
    for cmd in ("write -P 0x5a 1M 64k", "flush"):
        out = libvirtd.virsh("qemu-monitor-command", domain, "--hmp",
                             f'qemu-io -d virtio-disk0/virtio-backend "{cmd}"').stdout
        assert "error" not in out.lower(), out


def stop_domain(libvirtd: SessionLibvirtd, domain: str) -> None:
    libvirtd.virsh("destroy", domain)
    libvirtd.virsh("undefine", domain)


def vdi_range(node: SheepProcess) -> bytes:
    with node.client() as c, Vdi(c, "Alice", writable=False) as v:
        return bytes(v.pread(128 << 10, 1 << 20))


WRITTEN = b"\x5a" * (64 << 10) + bytes(64 << 10)  # read from 1 MiB on


def test_virsh_start_nbd_disk(libvirtd: SessionLibvirtd, one_node: SheepProcess) -> None:
    from test_nbd_plugin import Nbdkit

    with one_node.client() as c:
        c.create_vdi("Alice", SIZE)
    sock = libvirtd.home / "Alice.sock"
    nbd = Nbdkit(sock, ["vdi=Alice", f"address=127.0.0.1:{one_node.port}"])
    # As docs/libvirt.md's drop-in runs it: as QEMU's user (nobody here,
    # libvirt-qemu in a system install), whose socket QEMU may connect to.
    nbd.cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               *nbd.cmd]
    nbd.start()
    try:
        assert os.stat(sock).st_uid == NOBODY
        domain = started_copy(libvirtd, "alice-nbd.xml",
                              {"/run/sheepblk/Alice.sock": str(sock)})
        try:
            info = libvirtd.virsh("domblkinfo", domain, "vda").stdout
            assert re.search(rf"Capacity:\s+{SIZE}\b", info), info
            write_through_qemu(libvirtd, domain)
        finally:
            stop_domain(libvirtd, domain)
    finally:
        nbd.stop()
    assert vdi_range(one_node) == WRITTEN


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_virsh_start_sheepfs_disk_as_another_user(libvirtd: SessionLibvirtd,
                                                  one_node: SheepProcess) -> None:
    """sheepfs's files belong to whoever mounted it, mode 0644, and the
    kernel checks that: a root mount with --allow-other lets QEMU (nobody
    here, libvirt-qemu in a system install) open a volume read-only with
    cache='none', not read-write. Once root chowns the volume to QEMU's
    user (what a system libvirtd's dynamic ownership does; this session
    daemon runs as nobody and cannot, so the test does it), the domain
    starts read-write. docs/libvirt.md says so."""
    from test_sheepfs import mounted

    with one_node.client() as c:
        c.create_vdi("Alice", SIZE)
    with mounted(one_node, libvirtd.home, "mnt", "--allow-other") as m:
        vol = str(m / "volume/Alice")
        with pytest.raises(AssertionError, match=r"Could not open .*Alice.*Permission denied"):
            started_copy(libvirtd, "alice-sheepfs.xml", {"/mnt/sheep/volume/Alice": vol})
        libvirtd.virsh("undefine", "alice-sheepfs")
        domain = started_copy(libvirtd, "alice-sheepfs.xml", {
            "/mnt/sheep/volume/Alice": vol,
            "<target dev='vda' bus='virtio'/>": "<target dev='vda' bus='virtio'/><readonly/>"})
        try:
            info = libvirtd.virsh("domblkinfo", domain, "vda").stdout
            assert re.search(rf"Capacity:\s+{SIZE}\b", info), info
        finally:
            stop_domain(libvirtd, domain)
        os.chown(vol, NOBODY, NOBODY)
        domain = started_copy(libvirtd, "alice-sheepfs.xml", {"/mnt/sheep/volume/Alice": vol})
        try:
            info = libvirtd.virsh("domblkinfo", domain, "vda").stdout
            assert re.search(rf"Capacity:\s+{SIZE}\b", info), info
        finally:
            stop_domain(libvirtd, domain)
