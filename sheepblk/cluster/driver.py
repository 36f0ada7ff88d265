"""The cluster driver interface: membership and one totally ordered event stream.

Why one stream: Sheepdog's cluster operations (format, VDI create/delete,
lock) and membership changes must be applied by every node in the same
order, or nodes disagree about VDI ids and epochs. A driver's only job is to
deliver the same sequence of events to every member; what the events mean is
the daemon's business.

Drivers: `local[:SHMFILE]` (processes on one machine sharing a file),
`corosync[:cluster=NAME]` (a CPG group of the local corosync, libcpg),
`zookeeper:HOST:PORT[,HOST:PORT...]` (kazoo). All implement ClusterDriver.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import trio

from ..proto import SdNode


@dataclass(frozen=True)
class Joined:
    """`node` joined; `members` is the membership after it, in join order."""

    seq: int
    node: SdNode
    members: tuple[SdNode, ...]


@dataclass(frozen=True)
class Left:
    """`node` left or died (a crash is detected within seconds, not only a
    clean exit); `members` is the membership after it."""

    seq: int
    node: SdNode
    members: tuple[SdNode, ...]


@dataclass(frozen=True)
class Message:
    """A payload some member broadcast; delivered to every member, the
    sender included, at the same place in the stream."""

    seq: int
    sender: SdNode
    payload: bytes


Event = Joined | Left | Message


class DriverError(Exception):
    """The driver lost its backing service and could not recover."""


class ClusterDriver(abc.ABC):
    """One node's membership in one cluster.

    Resource handling: `run` owns every resource of the driver (files,
    sessions, threads) and releases them when cancelled, leaving the cluster.
    Error handling: temporary failures (ZooKeeper session loss) are retried
    inside the driver, which re-registers the node; DriverError only when it
    gives up.

    Event semantics (both drivers): `seq` numbers the events of the
    cluster's stream, consecutive (0, 1, 2 ...) and the same on every
    member for the same event; a member's stream starts at its own Joined.
    Each death or leave gives exactly one Left. A node that re-joins (a
    restart, or a ZooKeeper session loss, after which the driver re-joins
    by itself) is a new incarnation: every member, the node itself
    included if it kept running (session loss), sees Left for the old one
    then Joined for the new one.
    """

    name: str
    #: Membership as of the last Joined/Left handed to the consumer.
    members: tuple[SdNode, ...] = ()
    #: How many times this member has joined (one own Joined each): a
    #: consumer that has seen fewer of its own Joined events has not yet
    #: seen the Left of its last incarnation either (see `fenced`).
    incarnations: int = 0

    def fenced(self) -> bool:
        """Whether the others may have expelled this member without its
        knowing yet: then its node must serve no client I/O (the others
        may be writing, at an epoch without it, the objects it holds).
        Drivers whose members cannot be expelled behind their back (the
        local driver stops a member declared dead) never are."""
        return False

    @abc.abstractmethod
    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join as `me`, call task_status.started() once joined (the first
        event delivered is our own Joined, whose `members` tells who was
        there), then deliver events in total order until cancelled."""

    async def _deliver(self, recv: trio.MemoryReceiveChannel[Event],
                       events: trio.MemorySendChannel[Event]) -> None:
        """Hand the fold's events on at the consumer's pace, keeping
        `members` as of the last one handed on. Why a task of its own: the
        fold never waits for the consumer, so a consumer that broadcasts
        while handling an event cannot stall it."""
        async for ev in recv:
            if not isinstance(ev, Message):
                self.members = ev.members
            await events.send(ev)

    @abc.abstractmethod
    async def broadcast(self, payload: bytes) -> None:
        """Append a Message to the stream. Returns once it is ordered (it may
        not have been delivered to us yet)."""


def default_spec() -> str:
    """The driver of a sheep started without -c: `corosync` when a corosync
    answers on this host (Sheepdog's default driver, and what its install
    guide sets up), else `local`."""
    from .cpg import reachable

    return "corosync" if reachable() else "local"


def make_driver(spec: str) -> ClusterDriver:
    """Build a driver from `sheep -c` syntax: local[:SHMFILE],
    corosync[:cluster=NAME] or
    zookeeper:HOST:PORT[,HOST:PORT...][,timeout=SECONDS][,cluster=NAME]."""
    kind, _, arg = spec.partition(":")
    if kind == "local":
        from .local import LocalDriver

        return LocalDriver(arg or None)
    if kind == "zookeeper":
        from .zookeeper import ZooKeeperDriver

        if not arg:
            raise ValueError("zookeeper driver needs HOST:PORT[,HOST:PORT...]")
        return ZooKeeperDriver(arg)
    if kind == "corosync":
        from .corosync import CorosyncDriver

        return CorosyncDriver(arg)
    raise ValueError(f"unknown cluster driver {kind!r} (local, corosync or zookeeper)")
