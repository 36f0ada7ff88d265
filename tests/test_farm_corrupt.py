"""A bit flipped in a farm object on disk, end to end: a single node
answers an error (never the bad bytes); with two copies the read is served
from the good copy and the bad one is rewritten from it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import SheepFactory, run_dog

from sheepblk.store import CorruptObject, FarmStore
from sheepblk.store.farm_format import Header

MiB = 1 << 20
OBJ = 4 * MiB
# How long we wait for the background repair at most (it normally takes
# milliseconds; this is a hang guard, not a performance threshold).
REPAIR_WAIT = 60.0


def _flip_data(path: Path, chunk: int = 1) -> None:
    off = Header.for_size(OBJ).slot_offset(chunk, 0) + 100
    fd = os.open(path, os.O_RDWR)
    try:
        b = os.pread(fd, 1, off)
        os.pwrite(fd, bytes([b[0] ^ 0x04]), off)
    finally:
        os.close(fd)


def _data_files(store: Path) -> list[Path]:
    return sorted(p for p in (store / "obj").iterdir() if p.is_file() and p.name[0] == "0")


# The flipped bit has no good copy to repair from: the node says so, as an error.
@pytest.mark.expected_errors(r"object [0-9a-f]{16} is corrupt and has no other copy here")
def test_single_node_refuses_bad_bytes(sheep_factory: SheepFactory) -> None:
    (node,) = sheep_factory.start(1)
    run_dog(node, "cluster", "format", "-b", "farm", "-c", "1")
    run_dog(node, "vdi", "create", "A", "8M")
    data = os.urandom(OBJ)
    run_dog(node, "vdi", "write", "A", input=data)
    (obj,) = _data_files(node.store)
    _flip_data(obj)
    bad = run_dog(node, "vdi", "read", "A", "0", str(OBJ), check=False)
    assert bad.returncode != 0
    assert b"I/O error" in bad.stderr
    assert bad.stdout != data[:len(bad.stdout)] or len(bad.stdout) < 65536
    # The untouched first chunk still reads; the node keeps serving.
    assert run_dog(node, "vdi", "read", "A", "0", "4096").stdout == data[:4096]
    run_dog(node, "node", "list")


def test_two_copies_serve_good_and_repair(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(2)
    deadline = time.monotonic() + REPAIR_WAIT
    while True:  # both must be members before the format, or one holds all
        with nodes[0].client() as c:
            if len(c.node_list()) == 2:
                break
        assert time.monotonic() < deadline, "the second node never joined"
        time.sleep(0.1)
    run_dog(nodes[0], "cluster", "format", "-b", "farm", "-c", "2")
    run_dog(nodes[0], "vdi", "create", "A", "8M")
    data = os.urandom(OBJ)
    run_dog(nodes[0], "vdi", "write", "A", input=data)
    (obj,) = _data_files(nodes[0].store)
    _flip_data(obj)
    store = FarmStore(nodes[0].store)
    oid = int(obj.name, 16)
    buf = memoryview(bytearray(OBJ))
    try:
        store.read_into(oid, 0, buf)
        raise AssertionError("the flipped bit was not detected")
    except CorruptObject:
        pass
    # Read through the node holding the bad copy: served from the other one.
    assert run_dog(nodes[0], "vdi", "read", "A", "0", str(OBJ)).stdout == data
    deadline = time.monotonic() + REPAIR_WAIT
    while True:
        try:
            store.read_into(oid, 0, buf)
            break
        except CorruptObject:
            assert time.monotonic() < deadline, "bad copy never repaired"
            time.sleep(0.1)
    assert bytes(buf) == data
    # The log line follows the rewrite: wait for it the same way.
    log = nodes[0].store / "sheep.log"
    while "was corrupt here: rewritten from" not in log.read_text():
        assert time.monotonic() < deadline, "repair not logged"
        time.sleep(0.1)
