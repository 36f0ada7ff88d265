"""`dog cluster snapshot` end to end against real sheep: save, save again
(only new objects are added), dedup of a clone, list, load into a new
cluster byte for byte, delete with garbage collection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, run_dog

from sheepblk.client import SheepdogError
from sheepblk.proto import Res, vid_to_data_oid

MiB = 1 << 20


def _files(d: Path) -> set[Path]:
    return {p for p in d.rglob("*") if p.is_file()}


def _read(node: SheepProcess, *vdi: str) -> bytes:
    return run_dog(node, "vdi", "read", *vdi).stdout


def _farm_node(factory: SheepFactory) -> SheepProcess:
    (node,) = factory.start(1)
    out = run_dog(node, "cluster", "format", "-b", "farm", "-c", "1").stdout
    assert b"using backend farm store" in out
    info = run_dog(node, "cluster", "info", "-v").stdout.decode()
    assert "Cluster store: farm with 1 redundancy policy" in info
    return node


def test_save_twice_clone_load_delete(sheep_factory: SheepFactory, tmp_path: Path) -> None:
    node = _farm_node(sheep_factory)
    arch = tmp_path / "archive"
    run_dog(node, "vdi", "create", "A", "32M")
    first = os.urandom(8 * MiB)
    run_dog(node, "vdi", "write", "A", input=first)
    run_dog(node, "cluster", "snapshot", "save", "one", str(arch))
    files1 = _files(arch)
    objects1 = _files(arch / "objects")
    assert len(objects1) == 3  # two data objects and the inode

    # Write one more object: the second save adds it, the changed inode
    # and a trunk; the two unchanged data objects are not stored again.
    run_dog(node, "vdi", "write", "A", str(8 * MiB), str(MiB), input=b"\x5a" * MiB)
    run_dog(node, "cluster", "snapshot", "save", "two", str(arch))
    files2 = _files(arch)
    new = files2 - files1
    assert len(_files(arch / "objects") - objects1) == 2  # data object + inode
    assert len(new) == 3  # ... and the trunk (snap_log is rewritten in place)

    # A snapshot and a clone share every data object: nothing new but inodes.
    run_dog(node, "vdi", "snapshot", "-s", "base", "A")
    run_dog(node, "vdi", "clone", "-s", "base", "A", "B")
    before = _files(arch / "objects")
    run_dog(node, "cluster", "snapshot", "save", "three", str(arch))
    added = _files(arch / "objects") - before
    assert len(added) == 3  # inodes of A (new working VDI), base (now a snapshot), B
    assert all(p.stat().st_size < 64 * 1024 for p in added)  # inodes compress

    listing = run_dog(node, "cluster", "snapshot", "list", str(arch)).stdout.decode()
    lines = listing.splitlines()
    assert lines[0] == "Index\t\tTag\t\tSnapshot Time"
    assert [ln.split("\t\t")[:2] for ln in lines[1:]] == [["1", "one"], ["2", "two"],
                                                         ["3", "three"]]
    dup = run_dog(node, "cluster", "snapshot", "save", "two", str(arch), check=False)
    assert dup.returncode != 0 and b"already been used" in dup.stderr

    # Load into a brand-new cluster (plain backend): every VDI byte for byte.
    (other,) = sheep_factory.start(1)
    run_dog(other, "cluster", "format", "-c", "1")
    run_dog(other, "cluster", "snapshot", "load", "three", str(arch))
    for vdi in (("A",), ("B",), ("A", "-s", "base")):
        assert _read(other, *vdi) == _read(node, *vdi)
    assert _read(other, "A")[:8 * MiB] == first
    listed = run_dog(other, "vdi", "list", "-r").stdout.decode().splitlines()
    assert sorted(ln.split()[:2] for ln in listed) == [["=", "A"], ["c", "B"], ["s", "A"]]
    # The restored snapshot is read-only, the clone is writable.
    with other.client() as c:
        snap = c.lookup_vdi("A", tag="base").vid
        with pytest.raises(SheepdogError) as err:
            c.write_obj(vid_to_data_oid(snap, 0), b"abcd")
        assert err.value.result == Res.READONLY
    run_dog(other, "vdi", "write", "B", "0", "4", input=b"wxyz")
    assert _read(other, "B", "0", "4") == b"wxyz"

    # Load an older snapshot by index: A as it was at "one".
    run_dog(other, "cluster", "snapshot", "load", "1", str(arch))
    assert _read(other, "A")[:9 * MiB] == first + bytes(MiB)

    # Delete: what only "one" used goes, the rest still loads.
    run_dog(node, "cluster", "snapshot", "delete", "one", str(arch))
    assert [ln.split("\t\t")[1] for ln in run_dog(
        node, "cluster", "snapshot", "list", str(arch)).stdout.decode().splitlines()[1:]
    ] == ["two", "three"]
    assert len(_files(arch / "objects")) == len(objects1) + 2 + 3 - 1  # old inode of A
    run_dog(other, "cluster", "snapshot", "load", "two", str(arch))
    assert _read(other, "A")[8 * MiB:9 * MiB] == b"\x5a" * MiB
    gone = run_dog(other, "cluster", "snapshot", "load", "one", str(arch), check=False)
    assert gone.returncode != 0 and b"does not exist" in gone.stderr
