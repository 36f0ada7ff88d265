"""VID recycling (`dog cluster format -R`, Sheepdog's test 106): ids are
handed out lowest first, a name whose working VDI was deleted while its
snapshots live cannot be created again, and a family whose every member is
deleted gives its ids and inode objects back."""

from __future__ import annotations

from conftest import SheepFactory, SheepProcess, run_dog, wait_for
from test_cluster_daemon import node_count, running

from sheepblk.proto import is_vdi_obj


def _inodes(node: SheepProcess) -> int:
    return sum(1 for p in (node.store / "obj").iterdir()
               if len(p.name) == 16 and is_vdi_obj(int(p.name, 16)))


def _ids(node: SheepProcess) -> list[tuple[str, int]]:
    """(kind, vid) of each `dog vdi list -r` line, kind 's' for snapshots."""
    out = []
    for line in run_dog(node, "vdi", "list", "-r").stdout.decode().splitlines():
        f = line.split()
        out.append((f[0], int(f[7], 16)))
    return out


def test_recycled_ids(sheep_factory: SheepFactory, driver: str | None) -> None:
    nodes = sheep_factory.start(3, cluster=driver)
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    run_dog(nodes[0], "cluster", "format", "-c", "3", "-R")
    wait_for(lambda: all(running(n) for n in nodes), "running")
    run_dog(nodes[0], "vdi", "create", "test", "16M")
    for i in range(8):
        run_dog(nodes[i % 3], "vdi", "snapshot", "test")
    assert _ids(nodes[1]) == [("s", i) for i in range(1, 9)] + [("=", 9)]
    assert [_inodes(n) for n in nodes] == [9, 9, 9]
    run_dog(nodes[0], "vdi", "delete", "test")
    assert _ids(nodes[2]) == [("s", i) for i in range(1, 9)]
    assert [_inodes(n) for n in nodes] == [9, 9, 9]  # the snapshots need the inode
    out = run_dog(nodes[1], "vdi", "create", "test", "16M", check=False)
    assert out.returncode != 0 and b"VDI exists already" in out.stderr, out
    for i in range(1, 9):
        run_dog(nodes[i % 3], "vdi", "delete", "test", "-s", str(i))
    assert _ids(nodes[0]) == []
    wait_for(lambda: [_inodes(n) for n in nodes] == [0, 0, 0], "every inode removed")
    # The ids are free again, lowest first.
    run_dog(nodes[2], "vdi", "create", "other", "16M")
    run_dog(nodes[0], "vdi", "create", "test", "16M")
    assert sorted(_ids(nodes[1])) == [("=", 1), ("=", 2)]
