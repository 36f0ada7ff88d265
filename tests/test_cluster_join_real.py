"""Joins between clusters that do not match, with real `sheep` processes
(Sheepdog's tests 069 and 070)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, free_port, run_dog, wait_for
from test_cluster_daemon import node_count, running, three

from sheepblk.client import Vdi

MiB = 1 << 20


def _epochs(node: SheepProcess) -> list[list[int]]:
    """Each epoch's node ports, newest first, as `dog cluster info` shows."""
    with node.client() as c:
        _, logs = c.stat_cluster()
    return [sorted(n.nid.port for n in log.nodes) for log in logs]


def test_formatted_nodes_bring_their_cluster_to_unformatted_ones(
        sheep_factory: SheepFactory, driver: str | None) -> None:
    """070: the old nodes of a shut-down cluster come back to three new,
    unformatted nodes: the cluster resumes with all six."""
    old = three(sheep_factory, n=3, copies=3, cluster=driver)
    with old[0].client() as c:
        c.create_vdi("Alice", 16 * MiB)
        with Vdi(c, "Alice") as v:
            v.pwrite(b"kept" * 1024, 0)
    run_dog(old[0], "cluster", "shutdown")
    for n in old:
        assert n.proc is not None
        n.proc.wait(30)
    spec = old[0].cluster
    new = [SheepProcess(old[0].store.parent / f"new{i}", free_port(), spec, zone=3 + i)
           for i in range(3)]
    sheep_factory.nodes += new
    for n in new:
        n.start()
    wait_for(lambda: node_count(new[0]) == 3, "3 new nodes")
    for n in old:
        n.start()
    everyone = old + new
    wait_for(lambda: all(running(n) for n in everyone), "all six running")
    ports = sorted(n.port for n in everyone)
    for n in everyone:
        assert _epochs(n) == [ports, sorted(m.port for m in old)]
    with new[2].client() as c, Vdi(c, "Alice", writable=False) as v:
        assert v.pread(4096, 0) == b"kept" * 1024


# The foreign node leaves and says why, as an error: what this test wants.
@pytest.mark.expected_errors(r"leaving the cluster: refusing to join: this node's store belongs "
                             r"to another cluster")
def test_a_node_of_another_cluster_is_refused_and_never_counted(
        sheep_factory: SheepFactory, tmp_path: Path) -> None:
    """069 as first written: a node of another cluster, with a newer epoch,
    tries to join a cluster that waits for its own nodes. It is refused and
    stops; the cluster resumes when its own node comes, without it."""
    a = three(sheep_factory, n=3, copies=1)
    a[0].stop()
    wait_for(lambda: node_count(a[1]) == 2, "2 nodes")  # cluster A is at epoch 2
    run_dog(a[1], "cluster", "shutdown")
    for n in a[1:]:
        assert n.proc is not None
        n.proc.wait(30)
    # Cluster B on fresh stores with a[0]'s and a[1]'s ports.
    b = [SheepProcess(tmp_path / f"b{i}", a[i].port, a[0].cluster + "-b", zone=i)
         for i in range(2)]
    sheep_factory.nodes += b
    for n in b:
        n.start()
    wait_for(lambda: node_count(b[0]) == 2, "2 nodes of B")
    with b[0].client() as c:
        c.make_fs(copies=1)
    run_dog(b[0], "cluster", "shutdown")
    for n in b:
        assert n.proc is not None
        n.proc.wait(30)
    b[0].start()
    foreign = a[2]
    foreign.cluster = b[0].cluster
    foreign.start(wait=False)
    assert foreign.proc is not None
    assert foreign.proc.wait(60) == 1
    assert "belongs to another cluster" in (foreign.store / "sheep.log").read_text()
    b[1].start()
    wait_for(lambda: running(b[1]), "B running")
    run_dog(b[1], "cluster", "format")
    assert _epochs(b[1]) == [sorted(n.port for n in b)]
    assert node_count(b[0]) == 2
