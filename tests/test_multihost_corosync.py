"""The corosync driver across hosts: three network namespaces
(tests/multihost.py), each with its own corosync (knet over the
namespaces' addresses, a node list of all three) and its own sheep.

A host whose cable is pulled loses both other corosync nodes at once:
its sheep stops serving and says why (it is the minority side of a
partition), while the two others see one node go, move to a new epoch
and keep serving I/O. Once the cable is back, corosync merges again and
the host's sheep, started again, rejoins and serves the current bytes.
The sheep are bound to 0.0.0.0 without -y: each announces the address
corosync's node list gives its host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import multihost
import pytest
from conftest import SheepProcess, wait_for
from corosync_server import CorosyncServer
from corosync_server import missing as corosync_missing

from sheepblk.client import SheepClient, Vdi

MiB = 1 << 20
PORT = 7000
KNET_PORT = 5405  # each host's own: the namespaces do not share ports

pytestmark = pytest.mark.skipif(
    (multihost.missing(nft=False) or corosync_missing()) is not None,
    reason=f"no namespaces or corosync here: {multihost.missing(nft=False) or corosync_missing()}")


@pytest.fixture
def hosts() -> Iterator[multihost.Hosts]:
    hs = multihost.make([f"c{i}" for i in range(3)])
    try:
        yield hs
    finally:
        hs.remove()


@pytest.fixture
def corosyncs(hosts: multihost.Hosts, tmp_path: Path) -> Iterator[list[CorosyncServer]]:
    addrs = [h.addr for h in hosts.hosts]
    made = [CorosyncServer(tmp_path / f"corosync-{h.name}", prefix=h.exec_prefix(),
                           addrs=addrs, port=KNET_PORT) for h in hosts.hosts]
    try:
        for c in made:
            c.start()
        wait_for(lambda: all(c.members() == 3 for c in made), "corosync on all three hosts")
        yield made
    finally:
        for c in made:
            c.stop()


def node_count(host: multihost.Host) -> int:
    with SheepClient(host.addr, PORT, pool_size=1) as c:
        return len(c.node_list())


@pytest.mark.expected_errors(r"the cluster driver failed, this node stops serving: most of "
                             r"the cluster's members went down at once")
def test_a_host_cut_off_stops_its_sheep_the_others_go_on(
        hosts: multihost.Hosts, corosyncs: list[CorosyncServer], tmp_path: Path) -> None:
    # Bound to every address, no -y: each announces its corosync address.
    extra = ["--admin-from", f"{hosts.gateway}/32", "-b", "0.0.0.0"]
    sheep = [SheepProcess(tmp_path / f"sheep-{h.name}", PORT, "corosync", host=h.addr,
                          extra=extra, prefix=h.exec_prefix()) for h in hosts.hosts]
    try:
        for s in sheep:
            s.start()
        wait_for(lambda: all(node_count(h) == 3 for h in hosts.hosts), "3 sheep")
        with SheepClient(hosts[0].addr, PORT) as c:
            assert sorted(n.nid.addr for n in c.node_list()) == sorted(h.addr for h in hosts.hosts)
        data = os.urandom(4 * MiB)
        with SheepClient(hosts[0].addr, PORT) as c:
            c.make_fs(copies=3)
            wait_for(lambda: c.stat_cluster()[0] == 0, "formatted")
            c.create_vdi("Alice", 64 * MiB)
            with Vdi(c, "Alice") as v:
                v.pwrite(data, 0)
        hosts.link_down(hosts[2])
        assert sheep[2].proc is not None
        sheep[2].proc.wait(60)  # the minority side stops by itself
        assert sheep[2].proc.returncode != 0
        log = (sheep[2].store / "sheep.log").read_text()
        assert "most of the cluster's members went down at once" in log
        wait_for(lambda: node_count(hosts[0]) == 2 and node_count(hosts[1]) == 2, "2 sheep")
        with SheepClient(hosts[1].addr, PORT) as c, Vdi(c, "Alice") as v:
            v.pwrite(data[:MiB], 8 * MiB)
            assert v.pread(len(data), 0) == data
        hosts.heal()
        wait_for(lambda: all(c.members() == 3 for c in corosyncs), "corosync merged again")
        sheep[2].start()
        wait_for(lambda: all(node_count(h) == 3 for h in hosts.hosts), "3 sheep again")
        with SheepClient(hosts[2].addr, PORT) as c, Vdi(c, "Alice") as v:
            assert v.pread(len(data), 0) == data
            assert v.pread(MiB, 8 * MiB) == data[:MiB]
    finally:
        for s in sheep:
            s.stop()
