"""Nodes that stop and come back one at a time (Sheepdog's test 074): the
VDIs whose inodes only a returning node holds are found again once it is
back, through every node."""

from __future__ import annotations

import os
import signal

from conftest import SheepFactory, SheepProcess, free_port, run_dog, wait_for
from test_cluster_daemon import node_count, recovered, running, three

from sheepblk.client import Vdi

VDIS = 10


def test_rolling_stop_and_restart_keeps_every_vdi(sheep_factory: SheepFactory,
                                                  driver: str | None) -> None:
    nodes = three(sheep_factory, copies=1, cluster=driver)
    for i in range(VDIS):
        run_dog(nodes[0], "vdi", "create", "-P", f"test{i}", "16M")
    for n in reversed(nodes):  # 2, 1, 0, each after the cluster recovered
        wait_for(lambda: recovered([m for m in nodes if m.alive]), "recovery")
        n.stop()
    for i, n in enumerate(nodes):  # 0, 1, 2
        n.start()
        wait_for(lambda i=i: node_count(nodes[0]) == i + 1, f"{i + 1} nodes")  # type: ignore[misc]
        wait_for(lambda: recovered([m for m in nodes if m.alive]), "recovery")
    for i in range(VDIS):
        for n in nodes:
            out = run_dog(n, "vdi", "check", f"test{i}", check=False)
            assert out.returncode == 0, (n.port, f"test{i}", out.stdout, out.stderr)
            assert f"finish check&repair test{i}" in out.stdout.decode()


OBJ = 4 << 20
OBJECTS = 25


def _stamp(node: SheepProcess, marker: int) -> None:
    with node.client() as c, Vdi(c, "test") as v:
        for i in range(OBJECTS):
            v.pwrite(f"{marker}-{i}".encode().ljust(512, b"\0"), i * OBJ)


def _stamps(node: SheepProcess) -> list[bytes]:
    with node.client() as c, Vdi(c, "test", writable=False) as v:
        return [bytes(v.pread(512, i * OBJ)).rstrip(b"\0") for i in range(OBJECTS)]


def _replace(sheep_factory: SheepFactory, nodes: list[SheepProcess], new: SheepProcess,
             old: SheepProcess, *, slow: bool) -> None:
    """Start `new` (slowed down: its recovery throttled), kill `old` as soon as
    `new` is a member, wait for the two that are left to recover."""
    new.start()
    if slow:
        wait_for(lambda: running(new), "the new node running")
        run_dog(new, "node", "recovery", "set-throttle", "1", "2000")
    wait_for(lambda: node_count(new) == 3, "3 nodes")
    old.stop()
    wait_for(lambda: node_count(new) == 2, "2 nodes")
    if slow:
        run_dog(new, "node", "recovery", "set-throttle", "0", "0")
    wait_for(lambda: recovered([m for m in nodes if m.alive]), "recovery")


def test_old_nodes_back_never_serve_their_old_copies(sheep_factory: SheepFactory,
                                                      driver: str | None) -> None:
    """Sheepdog's test 028: copies=2; both nodes are replaced one at a time,
    new data is written, then the old nodes (holding the old data) come back
    while the new ones leave one at a time. Each old node is killed out of
    its first recovery (throttled here, slowed by load in Sheepdog's run):
    the next recovery must not take the old copies it had not replaced yet
    for current ones."""
    nodes = three(sheep_factory, n=2, copies=2, cluster=driver)
    with nodes[0].client() as c:
        c.create_vdi("test", 100 << 20)
    _stamp(nodes[0], 0)
    spec = nodes[0].cluster
    nodes += [SheepProcess(nodes[0].store.parent / f"node{i}", free_port(), spec, zone=i)
              for i in (2, 3)]
    sheep_factory.nodes += nodes[2:]
    for i in (2, 3):
        _replace(sheep_factory, nodes, nodes[i], nodes[i - 2], slow=False)
    _stamp(nodes[2], 1)
    want = [f"1-{i}".encode() for i in range(OBJECTS)]
    assert _stamps(nodes[2]) == want
    for i in (2, 3):
        _replace(sheep_factory, nodes, nodes[i - 2], nodes[i], slow=True)
    assert _stamps(nodes[0]) == want
    assert _stamps(nodes[1]) == want


def test_objects_left_only_in_stale_come_back_after_a_restart(
        sheep_factory: SheepFactory) -> None:
    """Sheepdog's test 072: the cluster is stopped (not `dog cluster
    shutdown`) and each node's copy of an object it owns is found only in
    its .stale/ when it comes back. The resume recovers at the same ring,
    as Sheepdog does, and the objects are in obj/ again."""
    nodes = three(sheep_factory, n=2, copies=1)
    (late,) = sheep_factory.start(1, cluster=nodes[0].cluster)
    nodes.append(late)
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    run_dog(nodes[0], "vdi", "create", "-P", "test", "64M")
    wait_for(lambda: recovered(nodes), "recovery")
    data = run_dog(nodes[0], "vdi", "read", "test").stdout
    for n in nodes:  # all at once, as the harness's pkill: the last epoch keeps all three
        assert n.proc is not None
        os.kill(n.proc.pid, signal.SIGTERM)
    for n in nodes:
        n.stop()
    assert all(epochs(n) == 2 for n in nodes), [epochs(n) for n in nodes]
    moved = []
    for n in nodes[:2]:  # an object each of the first epoch's nodes owns
        obj = n.store / "obj"
        names = sorted(p.name for p in obj.iterdir() if p.name.startswith("00"))
        if not names:  # the ring gave this node none (random ports)
            continue
        (obj / ".stale").mkdir(exist_ok=True)
        (obj / names[0]).rename(obj / ".stale" / f"{names[0]}.1")
        moved.append((n, names[0]))
    assert moved
    for n in nodes:
        n.start()
    wait_for(lambda: all(running(n) for n in nodes) and recovered(nodes), "recovery")
    for n, name in moved:
        assert (n.store / "obj" / name).exists(), (n.port, name)
    out = run_dog(nodes[2], "vdi", "check", "test")
    assert out.stdout.decode().splitlines() == ["finish check&repair test"]
    assert run_dog(nodes[1], "vdi", "read", "test").stdout == data


def epochs(node: SheepProcess) -> int:
    """The newest epoch log a stopped node keeps."""
    return max(int(p.name) for p in (node.store / "epoch").iterdir() if p.name.isdigit())
