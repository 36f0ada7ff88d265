"""What every cluster driver promises, checked on each with real member
processes: `local` (a shared file), `zookeeper` (a real ZooKeeper server,
tests/zk.py) and `corosync` (a real corosync 3, tests/corosync_server.py).

One total order for everyone, exactly one Left per death (kill -9) and per
clean leave, clusters kept apart by name. What only one driver does
(ZooKeeper's sessions and compaction, the local driver's log rotation,
corosync's own death) is in that driver's test file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import Member, check_same_order, start, wait_until

Specs = Callable[[str], str]
ZK_SESSION = 4  # seconds; ZooKeeper notices a killed member within it


@pytest.fixture(params=["local", "zookeeper", "corosync"])
def specs(request: pytest.FixtureRequest, tmp_path: Path) -> Specs:
    """name -> the `-c` spec of a cluster of that name on this driver."""
    if request.param == "local":
        return lambda name: f"local:{tmp_path / name}"
    if request.param == "zookeeper":
        zk = request.getfixturevalue("zk_server")
        return lambda name: f"zookeeper:{zk.hosts},timeout={ZK_SESSION},cluster={name}"
    request.getfixturevalue("corosync_server")
    return lambda name: f"corosync:cluster={name}-{os.getpid()}"


def test_same_order_for_everyone(specs: Specs, spawn: list[Member]) -> None:
    spec = specs("order")
    ms = [start(spawn, spec, 7100 + i, msgs=15, wait_members=3) for i in range(3)]
    wait_until(lambda: all(len(m.messages()) == 45 for m in ms), "45 messages each", members=ms)
    check_same_order(ms)
    for m in ms:
        assert sorted(m.members()) == [7100, 7101, 7102]
        # Each sender's messages arrive in the order it sent them.
        for sender in range(7100, 7103):
            mine = [p for p in m.messages() if p.startswith(f"{sender}:")]
            assert mine == [f"{sender}:{i}" for i in range(15)]
    # A late joiner learns the membership from its own Joined event.
    late = start(spawn, spec, 7103)
    wait_until(lambda: bool(late.events), "late join", members=ms + [late])
    assert sorted(late.events[0]["members"]) == [7100, 7101, 7102, 7103]
    wait_until(lambda: all(len(m.members()) == 4 for m in ms), "all see the late joiner", members=ms)
    check_same_order(ms + [late])


def test_kill9_gives_exactly_one_left(specs: Specs, spawn: list[Member]) -> None:
    spec = specs("kill")
    ms = [start(spawn, spec, 7200 + i) for i in range(3)]
    wait_until(lambda: all(len(m.members()) == 3 for m in ms), "3 members", members=ms)
    victim, survivors = ms[0], ms[1:]  # the oldest: the one that reports, or accepts joiners
    victim.kill9()
    wait_until(lambda: all(m.lefts(7200) for m in survivors), "Left for the killed member",
               timeout=ZK_SESSION * 2 + 10, members=survivors)
    time.sleep(1.5)  # any duplicate Left would show up by now
    for m in survivors:
        assert len(m.lefts(7200)) == 1
        assert sorted(m.members()) == [7201, 7202]
    check_same_order(survivors)
    # The survivors still let a new member in (the accepter was the victim).
    late = start(spawn, spec, 7203)
    wait_until(lambda: all(len(m.members()) == 3 for m in survivors + [late]),
               "the survivors and a new member", members=survivors + [late])
    check_same_order(survivors + [late])


def test_clean_leave(specs: Specs, spawn: list[Member]) -> None:
    spec = specs("leave")
    ms = [start(spawn, spec, 7300 + i) for i in range(2)]
    wait_until(lambda: all(len(m.members()) == 2 for m in ms), "2 members", members=ms)
    ms[0].stop()
    assert ms[0].proc.returncode == 0, ms[0]
    wait_until(lambda: bool(ms[1].lefts(7300)), "Left after SIGTERM", members=ms[1:])
    time.sleep(0.5)
    assert len(ms[1].lefts(7300)) == 1
    assert ms[1].members() == [7301]


def test_two_clusters_apart(specs: Specs, spawn: list[Member]) -> None:
    a = [start(spawn, specs("a"), 7400 + i, msgs=5, wait_members=2) for i in range(2)]
    b = [start(spawn, specs("b"), 7410 + i, msgs=5, wait_members=2) for i in range(2)]
    wait_until(lambda: all(len(m.messages()) == 10 for m in a + b), "10 messages each",
               members=a + b)
    time.sleep(0.3)
    for m in a:
        assert sorted(m.members()) == [7400, 7401]
        assert {p.split(":")[0] for p in m.messages()} == {"7400", "7401"}
    for m in b:
        assert sorted(m.members()) == [7410, 7411]
        assert {p.split(":")[0] for p in m.messages()} == {"7410", "7411"}
    check_same_order(a)
    check_same_order(b)
