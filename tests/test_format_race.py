"""Right after `dog cluster format`, every node serves as a formatted one.

Each node applies the ordered stream at its own pace (the local driver
polls every 50 ms once the log has been quiet), so right after one node
answers "formatted" another may not have read that far. A client asking
that other node must not get "Waiting for cluster to be formatted" (it
waits at a barrier), and the peer writes of the first VDI's creation, sent
while the creation's block holds every node's stream, must be served once
the peer reaches their epoch, not wait behind that block (a deadlock).

The pause before formatting lets every node's driver fall back to its idle
polling, which is what makes the lag likely; the tests wait for nothing
after that.
"""

from __future__ import annotations

import os
import time

from conftest import SheepFactory

from sheepblk.client import Vdi
from sheepblk.cluster import local

OBJ = 4 << 20


def quiet_cluster(sheep_factory: SheepFactory, n: int = 3) -> list:
    nodes = sheep_factory.start(n)
    time.sleep(local.BUSY_FOR + 0.5)
    return nodes


def test_a_client_of_another_node_sees_the_format(sheep_factory: SheepFactory) -> None:
    nodes = quiet_cluster(sheep_factory)
    with nodes[0].client() as c:
        c.make_fs(copies=2)
    with nodes[1].client() as c:
        vid = c.create_vdi("a", OBJ)
    with nodes[2].client() as c:
        assert c.lookup_vdi("a").vid == vid


def test_the_formatting_node_writes_to_peers_at_once(sheep_factory: SheepFactory) -> None:
    nodes = quiet_cluster(sheep_factory)
    data = os.urandom(2 * OBJ)
    with nodes[0].client() as c:
        c.make_fs(copies=3)
        c.create_vdi("a", 2 * OBJ)
        with Vdi(c, "a") as v:
            v.pwrite(data, 0)
    for n in nodes:
        with n.client() as c, Vdi(c, "a", writable=False) as v:
            assert v.pread(2 * OBJ, 0) == data
