"""Nodes that stop and come back one at a time (Sheepdog's test 074): the
VDIs whose inodes only a returning node holds are found again once it is
back, through every node."""

from __future__ import annotations

from conftest import SheepFactory, run_dog, wait_for
from test_cluster_daemon import node_count, recovered, three

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
