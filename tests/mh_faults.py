"""The faults of multi-host schedules: each one begins on a running cluster
(tests/mh_cluster.py), says what it should do to the sheep, and ends in a
heal that leaves the cluster to resume by itself.

    host            a sheep host's link down: cut off from everyone, its
                    clients included
    zone            a zone (one host) split off by nftables from the other
                    sheep and from ZooKeeper; the test's clients still reach
                    it: a gateway that must stop serving
    minority[:N]    N (or, by the seed, 2 to 4) sheep hosts split off from
                    the rest and from ZooKeeper (clients reach both sides);
                    with 4 off, the one sheep left has a single zone and
                    must halt
    zk-leader       the ZooKeeper leader's link down (the other two elect
                    another; sessions move to them)
    zk-kill         kill -9 one of the three ZooKeeper servers, restarted at
                    the heal
    session-expire  SIGSTOP a sheep past its session timeout, then SIGCONT:
                    it was expelled meanwhile and must join again
    power-off       kill -9 every sheep, then start them all: not a power
                    cut (the page cache survives a killed process; the
                    power-cut tests on one host drop it,
                    tests/test_powercut_*.py)

Every fault is undone by `end`, also when the test failed in between.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from mh_cluster import SHEEP_HOSTS, Cluster
from zk_ensemble import Server

MIN_ZONES = 2  # copies=3: a majority of the copies' zones (gateway.py's halt)


@dataclass
class Effect:
    """What a fault should do to the sheep (indexes of sheep hosts)."""

    what: str
    cut_off: set[int] = field(default_factory=set)  # cannot reach ZooKeeper
    reachable: set[int] = field(default_factory=set)  # of those, clients still reach
    sides: tuple[set[int], set[int]] | None = None  # a split with gateways on both sides
    down: set[int] = field(default_factory=set)  # not running or stopped

    @property
    def connected(self) -> set[int]:
        return set(range(SHEEP_HOSTS)) - self.cut_off - self.down

    @property
    def halted(self) -> set[int]:
        """The sheep that reach ZooKeeper but must halt I/O: too few zones."""
        return self.connected if len(self.connected) < MIN_ZONES else set()


class Fault:
    name = ""

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        raise NotImplementedError

    def end(self, c: Cluster) -> None:
        c.net.heal()


class HostDown(Fault):
    name = "host"

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        k = rnd.randrange(SHEEP_HOSTS)
        c.net.link_down(c.sheep_hosts[k])
        return Effect(f"h{k}'s link down", cut_off={k})


def _split(c: Cluster, off: list[int]) -> Effect:
    rest = [i for i in range(SHEEP_HOSTS) if i not in off]
    c.net.split([c.sheep_hosts[i] for i in off],
                [c.sheep_hosts[i] for i in rest] + c.zk_hosts)
    names = ",".join(f"h{i}" for i in off)
    return Effect(f"{names} split from the other sheep and ZooKeeper", cut_off=set(off),
                  reachable=set(off), sides=(set(off), set(rest)))


class ZoneSplit(Fault):
    name = "zone"

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        return _split(c, [rnd.randrange(SHEEP_HOSTS)])


class MinoritySplit(Fault):
    name = "minority"

    def __init__(self, n: int = 0) -> None:
        self.n = n  # how many hosts go; 0: 2 to 4, by the seed

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        n = self.n or rnd.choice([2, 3, 4])
        return _split(c, sorted(rnd.sample(range(SHEEP_HOSTS), n)))


class ZkLeaderDown(Fault):
    name = "zk-leader"

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        assert c.ensemble is not None
        leader = c.ensemble.wait_quorum()
        c.net.link_down(leader.host)
        return Effect(f"ZooKeeper leader {leader.host}'s link down")

    def end(self, c: Cluster) -> None:
        assert c.ensemble is not None
        c.net.heal()
        c.ensemble.wait_quorum()


class ZkKill(Fault):
    name = "zk-kill"

    def __init__(self) -> None:
        self.killed: Server | None = None

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        assert c.ensemble is not None
        self.killed = rnd.choice(c.ensemble.servers)
        mode = self.killed.mode() or "down"
        self.killed.kill()
        return Effect(f"ZooKeeper server {self.killed.myid} ({mode}) killed")

    def end(self, c: Cluster) -> None:
        assert c.ensemble is not None
        if self.killed is not None and not self.killed.alive:
            self.killed.start()
        self.killed = None
        c.ensemble.wait_quorum()


class SessionExpire(Fault):
    name = "session-expire"

    def __init__(self) -> None:
        self.stopped: int | None = None

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        self.stopped = rnd.randrange(SHEEP_HOSTS)
        c.pause(self.stopped)
        return Effect(f"h{self.stopped}'s sheep stopped (SIGSTOP)", down={self.stopped})

    def end(self, c: Cluster) -> None:
        if self.stopped is not None and self.stopped in c.paused:
            c.resume(self.stopped)
        self.stopped = None


class PowerOff(Fault):
    name = "power-off"

    def begin(self, c: Cluster, rnd: random.Random) -> Effect:
        c.kill_all()
        return Effect("every sheep killed (kill -9)", down=set(range(SHEEP_HOSTS)))

    def end(self, c: Cluster) -> None:
        if not all(s.alive for s in c.sheep):
            c.start_all()


SCHEDULES: dict[str, type[Fault]] = {
    f.name: f for f in (HostDown, ZoneSplit, MinoritySplit, ZkLeaderDown, ZkKill,
                        SessionExpire, PowerOff)}


def make(spec: str) -> Fault:
    """A fault from its schedule's name, with an argument after a colon
    where it takes one ("minority:3": three hosts split off)."""
    name, _, arg = spec.partition(":")
    if name not in SCHEDULES:
        raise ValueError(f"no schedule {name!r} (one of {', '.join(SCHEDULES)})")
    if arg:
        if name != "minority":
            raise ValueError(f"schedule {name!r} takes no argument")
        return MinoritySplit(int(arg))
    return SCHEDULES[name]()


def hold(seconds: float) -> None:
    """Let a fault last (the clients run meanwhile)."""
    time.sleep(seconds)
