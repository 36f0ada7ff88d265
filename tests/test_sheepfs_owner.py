"""Who may open a sheepfs volume: its files belong to the user who mounts
(or to `--uid/--gid`), and root may chown a volume and its owner chmod it,
in the mount's memory, as libvirt does to hand a disk to QEMU's user.
Checked with the kernel's own permission checks (default_permissions), by
opening the volume as nobody through `setpriv`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SheepProcess
from test_sheepfs import mounted

NOBODY = 65534
MIB = 1 << 20

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                       reason="needs root and setpriv to act as nobody"),
]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="sheepfs-owner-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", *argv], capture_output=True, text=True, timeout=60)


def write_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    return as_nobody("dd", "if=/dev/zero", f"of={path}", "bs=4096", "count=1", "conv=notrunc")


def test_root_chown_hands_a_volume_to_another_user(one_node: SheepProcess,
                                                   open_dir: Path) -> None:
    with one_node.client() as c:
        c.create_vdi("Alice", 8 * MIB)
    with mounted(one_node, open_dir, "mnt", "--allow-other") as m:
        vol = m / "volume/Alice"
        assert vol.stat().st_uid == 0
        denied = write_as_nobody(vol)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        os.chown(vol, NOBODY, NOBODY)
        st = vol.stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        done = write_as_nobody(vol)
        assert done.returncode == 0, done.stderr
        # The owner may chmod; only root may chown.
        assert as_nobody("chmod", "600", str(vol)).returncode == 0
        assert vol.stat().st_mode & 0o777 == 0o600
        refused = as_nobody("chown", "0", str(vol))
        assert refused.returncode != 0 and "not permitted" in refused.stderr
        os.chown(vol, 0, 0)  # given back, as libvirt does when the VM stops
        assert write_as_nobody(vol).returncode != 0


def test_uid_and_gid_options_own_every_file(one_node: SheepProcess, open_dir: Path) -> None:
    with one_node.client() as c:
        c.create_vdi("Alice", 8 * MIB)
    with mounted(one_node, open_dir, "mnt", "--allow-other", "--uid", "nobody",
                 "--gid", str(NOBODY)) as m:
        vol = m / "volume/Alice"
        st = vol.stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert write_as_nobody(vol).returncode == 0
        assert (m / "vdi/list").stat().st_uid == NOBODY
