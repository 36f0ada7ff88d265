"""A full disk: writes answer "Server has no space for new objects", the
daemon keeps serving, and what was stored before stays intact."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, free_port

from sheepblk.client import SheepdogError, Vdi
from sheepblk.proto import Res

MiB = 1 << 20
DISK_MIB = 40


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_answers_no_space_and_keeps_data(small_disk: Path,
                                                   sheep_factory: SheepFactory) -> None:
    node = SheepProcess(small_disk / "store", free_port(), f"local:{small_disk}/shm")
    sheep_factory.nodes.append(node)
    node.start()
    with node.client() as c:
        c.make_fs(copies=1)
        c.create_vdi("kept", 8 * MiB)
        c.create_vdi("big", 256 * MiB)
        kept = os.urandom(4 * MiB)
        with Vdi(c, "kept") as v:
            v.pwrite(kept, 0)
        chunk = os.urandom(4 * MiB)
        with Vdi(c, "big") as v:
            written = 0
            with pytest.raises(SheepdogError) as err:
                for off in range(0, v.size, len(chunk)):
                    v.pwrite(chunk, off)
                    written += len(chunk)
            assert err.value.result == Res.NO_SPACE
            assert "no space" in str(err.value)
            assert written < v.size
            # Everything acknowledged before the disk filled reads back.
            for off in range(0, written, len(chunk)):
                assert v.pread(len(chunk), off) == chunk
        with Vdi(c, "kept") as v:
            assert v.pread(len(kept), 0) == kept
        # Freeing space makes writes work again; the daemon never stopped.
        c.delete_vdi("big")
        with Vdi(c, "kept") as v:
            v.pwrite(b"again", 4 * MiB)
            assert v.pread(5, 4 * MiB) == b"again"
    assert node.alive
