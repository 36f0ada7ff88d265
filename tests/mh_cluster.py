"""A sheep cluster on several hosts (tests/multihost.py): the layout every
multi-host schedule runs on.

    h0 .. h4   one sheep each, port 7000 on the host's own address
               (`-b ADDR -y ADDR`), zone = host index, copies=3
    z0 .. z2   one ZooKeeper server each (tests/zk_ensemble.py); every
               sheep's driver is `zookeeper:z0,z1,z2,timeout=SESSION`
    root       the test: its clients, nbdkit, and the `--admin-from`
               address that formats the cluster

Why ZooKeeper has hosts of its own: a fault of the ensemble (its leader
cut off, a server killed) then hits no sheep, and a sheep cut off hits no
server, so each schedule tests one thing.

Error handling: `start` raises if the cluster does not come up within
generous bounds; `stop` stops every process this object started (by pid,
continuing a stopped sheep first) and removes the hosts, whatever state a
failed test left them in.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import multihost
from conftest import SheepProcess, wait_for
from zk_ensemble import Ensemble

from sheepblk.client import ConnectionPool, SheepClient
from sheepblk.proto import Res

SHEEP_HOSTS = 5
ZK_HOSTS = 3
COPIES = 3
PORT = 7000
SESSION = 4.0  # seconds: the sheep's ZooKeeper session timeout
WAIT = 120.0  # generous: eight hosts' processes on two shared cores


def missing() -> str | None:
    from zk import missing as zk_missing

    return multihost.missing() or zk_missing()


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts: multihost.Hosts | None = None
        self.ensemble: Ensemble | None = None
        self.sheep: list[SheepProcess] = []
        self.paused: set[int] = set()

    @property
    def net(self) -> multihost.Hosts:
        assert self.hosts is not None
        return self.hosts

    @property
    def sheep_hosts(self) -> list[multihost.Host]:
        return self.net.hosts[:SHEEP_HOSTS]

    @property
    def zk_hosts(self) -> list[multihost.Host]:
        return self.net.hosts[SHEEP_HOSTS:]

    def gateway(self, i: int) -> str:
        """Sheep i's "ADDR:PORT"."""
        return f"{self.sheep_hosts[i].addr}:{PORT}"

    def client(self, i: int, timeout: float = 30.0) -> SheepClient:
        return SheepClient(pool=ConnectionPool(self.sheep_hosts[i].addr, PORT, 2,
                                               timeout=timeout))

    def start(self) -> None:
        names = [f"h{i}" for i in range(SHEEP_HOSTS)] + [f"z{i}" for i in range(ZK_HOSTS)]
        self.hosts = multihost.make(names)
        self.ensemble = Ensemble(self.zk_hosts, self.tmp / "zk")
        self.ensemble.start()
        spec = self.ensemble.spec(SESSION)
        admin = f"{self.net.gateway}/32,{self.net.gateway6}/128"
        for i, h in enumerate(self.sheep_hosts):
            self.sheep.append(SheepProcess(
                self.tmp / h.name / "store", PORT, spec, zone=i,
                extra=["-y", h.addr, "--admin-from", admin], host=h.addr,
                prefix=h.exec_prefix()))
        for s in self.sheep:
            s.start(wait=False)
        for s in self.sheep:
            multihost.wait_reachable(s.host, PORT, WAIT)
        wait_for(lambda: all(self.node_count(i) == SHEEP_HOSTS for i in range(SHEEP_HOSTS)),
                 f"{SHEEP_HOSTS} sheep in every node list", WAIT)
        with self.client(0) as c:
            c.make_fs(copies=COPIES)
        wait_for(lambda: all(self.running(i) for i in range(SHEEP_HOSTS)), "a running cluster",
                 WAIT)

    # ---- what a node says ----

    def node_count(self, i: int) -> int:
        with self.client(i, timeout=5) as c:
            return len(c.node_list())

    def running(self, i: int) -> bool:
        with self.client(i, timeout=5) as c:
            return c.stat_cluster()[0] == Res.SUCCESS

    def epoch(self, i: int) -> int:
        with self.client(i, timeout=5) as c:
            _, logs = c.stat_cluster()
            return logs[0].epoch if logs else 0

    def in_recovery(self, i: int) -> bool:
        with self.client(i, timeout=5) as c:
            return bool(c.stat_recovery().in_recovery)

    # ---- faults on processes ----

    def pause(self, i: int) -> None:
        """SIGSTOP sheep i (a stall: GC, swap, a hung disk)."""
        os.kill(self.sheep[i].pid, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        os.kill(self.sheep[i].pid, signal.SIGCONT)
        self.paused.discard(i)

    def kill_all(self) -> None:
        """kill -9 every sheep (not a power cut: the page cache stays)."""
        for i in list(self.paused):
            self.resume(i)
        for s in self.sheep:
            s.kill9()

    def start_all(self) -> None:
        for s in self.sheep:
            s.start(wait=False)
        for s in self.sheep:
            multihost.wait_reachable(s.host, PORT, WAIT)

    # ---- teardown ----

    def stop(self) -> None:
        """Every process we started, then the hosts; never raises on a
        process that is gone already."""
        for i in list(self.paused):
            try:
                self.resume(i)
            except ProcessLookupError:
                pass
        if self.hosts is not None:
            try:
                self.hosts.heal()  # so that leaving sheep reach ZooKeeper
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for s in self.sheep:
            s.stop()
        if self.ensemble is not None:
            self.ensemble.stop()
        if self.hosts is not None:
            self.hosts.remove()

