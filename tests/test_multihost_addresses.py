"""Addresses that are not loopback: sheep on hosts of their own (network
namespaces, tests/multihost.py), bound with -b, announcing -y, over IPv4
and IPv6, with a client network beside the storage network.

- `-b 0.0.0.0 -y STORAGE_ADDR` on hosts with two interfaces: the sheep
  talk to each other on the storage network, clients reach any sheep on
  the client network, and `dog node list` / `dog cluster info` show the
  announced addresses;
- `-b ADDR6` alone: an IPv6 cluster (dog shows its nodes as C dog does,
  ADDR:PORT without brackets);
- `-b 0.0.0.0` without -y, zookeeper driver: a sheep announces the
  address its host reaches ZooKeeper from (as C sheep announces a
  non-loopback address), not 127.0.0.1, which every other host would
  take for itself.

The local driver's shared file works across namespaces (one machine, one
file system), so the first two need no ZooKeeper.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import multihost
import pytest
from conftest import SheepProcess, bin_path, wait_for

from sheepblk.client import ConnectionPool, SheepClient, Vdi

MiB = 1 << 20
PORT = 7000

pytestmark = pytest.mark.skipif(multihost.missing(nft=False) is not None,
                                reason=f"no namespaces here: {multihost.missing(nft=False)}")


@pytest.fixture
def started() -> Iterator[list[SheepProcess]]:
    """Sheep a test starts, each stopped (by pid) before its host goes."""
    made: list[SheepProcess] = []
    yield made
    for s in made:
        s.stop()


def hosts_of(n: int, networks: int = 1) -> Iterator[multihost.Hosts]:
    why = multihost.missing(nft=False)
    if why is not None:
        pytest.skip(why)
    hs = multihost.make([f"h{i}" for i in range(n)], networks=networks)
    try:
        yield hs
    finally:
        hs.remove()


@pytest.fixture
def three() -> Iterator[multihost.Hosts]:
    yield from hosts_of(3)


@pytest.fixture
def three_two_nets() -> Iterator[multihost.Hosts]:
    yield from hosts_of(3, networks=2)


def start(started: list[SheepProcess], tmp: Path, host: multihost.Host, cluster: str,
          *extra: str, bind: str, reach: str) -> SheepProcess:
    """A sheep on `host` (`-b bind` and `extra`), waited for on `reach`."""
    s = SheepProcess(tmp / host.name, PORT, cluster, zone=host.index,
                     extra=["-b", bind, *extra], prefix=host.exec_prefix())
    started.append(s)
    s.start(wait=False)
    multihost.wait_reachable(reach, PORT)
    return s


def client(addr: str) -> SheepClient:
    return SheepClient(pool=ConnectionPool(addr, PORT, 2, timeout=30))


def dog(addr: str, *args: str) -> str:
    out = subprocess.run([bin_path("dog"), *args, "-a", addr, "-p", str(PORT)],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def nodes_of(addr: str) -> set[str]:
    with client(addr) as c:
        return {str(n.nid) for n in c.node_list()}


def test_sheep_announce_y_and_clients_use_another_network(
        started: list[SheepProcess], three_two_nets: multihost.Hosts, tmp_path: Path) -> None:
    hs = three_two_nets
    cluster = f"local:{tmp_path}/shm"
    admin = f"{hs.more[0][1]}/32"  # the test, on the client network
    for h in hs.hosts:  # eth0: storage network (announced), eth1: clients
        start(started, tmp_path, h, cluster, "-y", h.addr, "--admin-from", admin,
              bind="0.0.0.0", reach=h.more[0])
    storage = {f"{h.addr}:{PORT}" for h in hs.hosts}
    front = [h.more[0] for h in hs.hosts]
    wait_for(lambda: all(nodes_of(a) == storage for a in front), "3 nodes, by -y")
    with client(front[0]) as c:
        c.make_fs(copies=3)
    wait_for(lambda: dog(front[2], "cluster", "info").startswith("Cluster status: running"),
             "a running cluster")
    data = os.urandom(8 * MiB)
    with client(front[1]) as c:
        c.create_vdi("Alice", 16 * MiB)
        with Vdi(c, "Alice") as v:
            v.pwrite(data, 0)
    for a in front:  # every gateway, reached on the client network
        with client(a) as c, Vdi(c, "Alice", writable=False) as v:
            assert v.pread(len(data), 0) == data
    listed = dog(front[0], "node", "list")
    for h in hs.hosts:
        assert f" {h.addr}:{PORT} " in listed, listed
        assert h.more[0] not in listed
    info = dog(front[0], "cluster", "info")
    epoch_line = info.strip().splitlines()[-1]
    assert all(f"{h.addr}:{PORT}" in epoch_line for h in hs.hosts), info
    # Each object's copies went over the storage network to all three.
    for s in started:
        assert sum(1 for p in (s.store / "obj").iterdir() if p.name.startswith("00")) >= 2


def test_an_ipv6_cluster(started: list[SheepProcess], three: multihost.Hosts,
                         tmp_path: Path) -> None:
    hs = three
    cluster = f"local:{tmp_path}/shm"
    admin = f"{hs.gateway6}/128"
    for h in hs.hosts:
        start(started, tmp_path, h, cluster, "--admin-from", admin, bind=h.addr6, reach=h.addr6)
    want = {f"[{h.addr6}]:{PORT}" for h in hs.hosts}
    wait_for(lambda: nodes_of(hs[0].addr6) == want, "3 IPv6 nodes")
    with client(hs[0].addr6) as c:
        c.make_fs(copies=3)
        c.create_vdi("Alice", 8 * MiB)
    wait_for(lambda: dog(hs[1].addr6, "cluster", "info").startswith("Cluster status: running"),
             "a running cluster")
    data = os.urandom(4 * MiB)
    with client(hs[1].addr6) as c, Vdi(c, "Alice") as v:
        v.pwrite(data, 0)
    with client(hs[2].addr6) as c, Vdi(c, "Alice", writable=False) as v:
        assert v.pread(len(data), 0) == data
    listed = dog(hs[2].addr6, "node", "list")
    info = dog(hs[0].addr6, "cluster", "info")
    for h in hs.hosts:
        assert f" {h.addr6}:{PORT}\t" in listed, listed
        assert f"{h.addr6}:{PORT}:" in info, info  # ADDR:PORT:VNODES, as C dog


def test_a_wildcard_bind_announces_the_address_that_reaches_zookeeper(
        started: list[SheepProcess], three: multihost.Hosts, tmp_path: Path) -> None:
    from zk import ZooKeeperServer
    from zk import missing as zk_missing

    if zk_missing() is not None:
        pytest.skip(f"no ZooKeeper: {zk_missing()}")
    hs = three
    server = ZooKeeperServer(tmp_path / "zk")  # in this namespace: the hosts reach it
    server.start()
    try:
        spec = f"zookeeper:{hs.gateway}:{server.port},timeout=4"
        admin = f"{hs.gateway}/32"
        for h in hs.hosts[:2]:
            start(started, tmp_path, h, spec, "--admin-from", admin, bind="0.0.0.0",
                  reach=h.addr)
        want = {f"{h.addr}:{PORT}" for h in hs.hosts[:2]}
        wait_for(lambda: nodes_of(hs[0].addr) == want, "2 nodes, by their own addresses")
        with client(hs[0].addr) as c:
            c.make_fs(copies=2)
            c.create_vdi("Alice", 8 * MiB)
            with Vdi(c, "Alice") as v:
                v.pwrite(b"z" * MiB, 0)
        with client(hs[1].addr) as c, Vdi(c, "Alice", writable=False) as v:
            assert v.pread(MiB, 0) == b"z" * MiB
    finally:
        for s in started:
            s.stop()
        server.stop()
