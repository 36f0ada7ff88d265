"""Multi-disk nodes in a cluster losing disks while a client writes, and
while nodes come and go (Sheepdog's test 056): the writes succeed, and
every object ends up with its copies, checked by `dog vdi check`."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import MdSheepProcess, SheepFactory, SheepProcess, free_port, run_dog, wait_for
from test_cluster_daemon import node_count, recovered, running

MiB = 1 << 20
SIZE = 48 * MiB


def _md_node(tmp: Path, i: int, cluster: str) -> MdSheepProcess:
    """A sheep with its metadata in STORE and objects on three disks."""
    store = tmp / f"n{i}"
    return MdSheepProcess(store, free_port(), cluster, [store / f"d{k}" for k in range(3)],
                          zone=i)


def _write_in_background(node: SheepProcess, data: bytes) -> tuple[threading.Thread, list]:
    result: list = []

    def run() -> None:
        result.append(run_dog(node, "vdi", "write", "test", input=data, check=False))

    t = threading.Thread(target=run)
    t.start()
    return t, result


def _pull(disk: Path) -> None:
    """Remove a disk's directory while the node may still create files in
    it (rmtree then meets a directory that is not empty yet)."""
    while disk.exists():
        shutil.rmtree(disk, ignore_errors=True)


def _check(node: SheepProcess, data: bytes) -> None:
    out = run_dog(node, "vdi", "check", "test", check=False)
    assert out.returncode == 0 and b"finish check&repair test" in out.stdout, out
    assert run_dog(node, "vdi", "read", "test").stdout == data


# The three disks pulled are dropped (errors), and a recovery that was writing
# to a disk as it went fails that object (an error; the next pass redoes it).
@pytest.mark.expected_errors(r"disk \S+/(n0/d0|n1/d0|n1/d1) dropped \(",
                             r"cannot store recovered [0-9a-f]{16}: create [0-9a-f]{16} "
                             r"\(disk \S+/(n0/d0|n1/d0|n1/d1) dropped\)",
                             # A recovery whose final flush meets a disk lost at
                             # that moment fails, and runs again.
                             r"epoch \d+: recovery failed(?s:.*)flush failed for 1 file\(s\): "
                             r"\S+/(n0/d0|n1/d0|n1/d1): No such file")
def test_disks_lost_during_writes_and_membership_changes(sheep_factory: SheepFactory,
                                                          tmp_path: Path) -> None:
    spec = f"local:{tmp_path}/shm"
    nodes = [_md_node(tmp_path, i, spec) for i in range(5)]
    sheep_factory.nodes += nodes
    for n in nodes[:4]:
        n.start()
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    run_dog(nodes[0], "cluster", "format", "-c", "3")
    wait_for(lambda: all(running(n) for n in nodes[:4]), "running")
    run_dog(nodes[0], "vdi", "create", "-P", "test", str(SIZE))

    data = os.urandom(SIZE)
    writer, result = _write_in_background(nodes[0], data)
    _pull(nodes[0].disks[0])  # node 0 loses a disk mid-write
    nodes[4].start()
    wait_for(lambda: node_count(nodes[0]) == 5, "5 nodes")
    writer.join(120)
    assert result[0].returncode == 0, result[0]
    wait_for(lambda: recovered([n for n in nodes if n.alive]), "recovery")
    _check(nodes[1], data)

    data = bytes(SIZE)
    writer, result = _write_in_background(nodes[0], data)
    _pull(nodes[1].disks[0])
    nodes[2].stop()
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    _pull(nodes[1].disks[1])  # node 1 is down to its last disk
    writer.join(120)
    assert result[0].returncode == 0, result[0]
    wait_for(lambda: recovered([n for n in nodes if n.alive]), "recovery")
    _check(nodes[3], data)
    assert nodes[1].alive


def test_command_line_shows_the_disks_apart(sheep_factory: SheepFactory, tmp_path: Path) -> None:
    """`pgrep -f "sheep STORE "` finds a multi-disk node, as with C sheep
    (Sheepdog's harness stops nodes that way)."""
    node = _md_node(tmp_path, 0, f"local:{tmp_path}/shm")
    sheep_factory.nodes.append(node)
    node.start()
    cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert f"{node.store} {node.disks[0]} {node.disks[1]} " in cmdline, cmdline
