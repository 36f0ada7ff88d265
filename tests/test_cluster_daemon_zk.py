"""The kill -9 / rejoin / recovery test of test_cluster_daemon.py with the
`zookeeper` driver against a real ZooKeeper server (tests/zk.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SheepFactory
from test_cluster_daemon import node_count, running, wait_for, wait_settled
from zk import ZooKeeperServer, missing

from sheepblk.client import Vdi

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no ZooKeeper: {missing()}")

MiB = 1 << 20
SESSION = 4  # seconds: how soon ZooKeeper notices a killed sheep


@pytest.fixture
def zk(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(tmp_path / "zk")
    server.start()
    yield server
    server.stop()


def test_zookeeper_kill_rejoin_recovers_copies(sheep_factory: SheepFactory,
                                                zk: ZooKeeperServer) -> None:
    spec = f"zookeeper:{zk.hosts},timeout={SESSION},cluster=t{os.getpid()}"
    nodes = sheep_factory.start(3, cluster=spec)
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    with nodes[0].client() as c:
        c.make_fs(copies=3)
    wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
    data = os.urandom(10 * MiB)
    with nodes[0].client() as c:
        c.create_vdi("Alice", 64 * MiB)
        with Vdi(c, "Alice") as v:
            v.pwrite(data, 0)
    nodes[1].kill9()
    with nodes[0].client() as c, Vdi(c, "Alice") as v:
        # I/O goes on while ZooKeeper has not yet noticed, and after.
        v.pwrite(data[:MiB], 20 * MiB)
        wait_for(lambda: node_count(nodes[0]) == 2, "2 nodes")
        v.pwrite(data[MiB:2 * MiB], 30 * MiB)
        assert v.pread(len(data), 0) == data
    nodes[1].start()
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes again")
    wait_settled(nodes, 3)
    with nodes[1].client() as c, Vdi(c, "Alice") as v:
        assert v.pread(MiB, 30 * MiB) == data[MiB:2 * MiB]
