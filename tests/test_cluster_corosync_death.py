"""Corosync dies under running sheep: they stop serving and say why,
instead of serving on with a membership nobody updates any more.

A module of its own: it kills its corosync, and there is one per host
(tests/corosync_server.py), so no other test may share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SheepFactory, wait_for
from corosync_server import CorosyncServer, missing
from test_cluster_daemon import node_count, running

from sheepblk.client import SheepClient, Vdi
from sheepblk.client.errors import NetworkError
from sheepblk.cluster.cpg import reachable

MiB = 1 << 20
LOST = "lost the connection to corosync"


@pytest.fixture
def own_corosync(tmp_path: Path) -> Iterator[CorosyncServer]:
    why = missing()
    if why is not None:
        pytest.skip(f"no corosync: {why}")
    if reachable():
        pytest.skip("a corosync of this host's runs: this test kills its own")
    server = CorosyncServer(tmp_path / "corosync")
    server.start()
    yield server
    server.stop()


@pytest.mark.expected_errors(r"the cluster driver failed, this node stops serving: " + LOST)
def test_sheep_stops_and_says_so_when_corosync_dies(sheep_factory: SheepFactory,
                                                   own_corosync: CorosyncServer) -> None:
    nodes = sheep_factory.start(2, cluster=f"corosync:cluster=death{os.getpid()}")
    wait_for(lambda: node_count(nodes[0]) == 2, "2 nodes")
    with nodes[0].client() as c:
        c.make_fs(copies=2)
    wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
    with nodes[0].client() as c:
        c.create_vdi("Alice", 16 * MiB)
        with Vdi(c, "Alice") as v:
            v.pwrite(b"a" * MiB, 0)
    own_corosync.kill9()
    for n in nodes:
        assert n.proc is not None
        assert n.proc.wait(60) != 0
        log = (n.store / "sheep.log").read_text()
        assert f"this node stops serving: {LOST}" in log
    # Nothing answers on their ports any more: a client gets an error at
    # once, not a hang.
    with pytest.raises(NetworkError):
        SheepClient("127.0.0.1", nodes[0].port).node_list()
