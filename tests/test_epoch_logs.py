"""A node that was down through some epochs has no log of them; `dog
cluster info` through it still lists every epoch's members, as through
the nodes that were there (Sheepdog's test 001): the node asks the others
for the logs it misses and keeps them."""

from __future__ import annotations

import re

from conftest import SheepFactory, SheepProcess, run_dog, wait_for
from test_cluster_daemon import node_count, three

_EPOCH_LINE = re.compile(r"^\S+ \S+ +(\d+) \[(.*)\]$")


def epoch_lines(node: SheepProcess) -> dict[int, str]:
    """epoch -> its member list, as `dog cluster info` prints them."""
    out = run_dog(node, "cluster", "info").stdout.decode()
    return {int(m[1]): m[2] for line in out.splitlines() if (m := _EPOCH_LINE.match(line))}


def test_missed_epochs_are_listed_through_every_node(sheep_factory: SheepFactory) -> None:
    a, b = three(sheep_factory, n=2, copies=1)
    a.kill9()  # epoch 2: B alone, A misses it
    wait_for(lambda: node_count(b) == 1, "B alone")
    (c,) = sheep_factory.start(1, cluster=a.cluster)  # epoch 3: B and C
    wait_for(lambda: node_count(b) == 2, "B and C")
    c.kill9()
    wait_for(lambda: node_count(b) == 1, "B alone again")
    b.kill9()
    for i, n in enumerate((a, b, c)):  # A comes back first, with epoch 1 only
        n.start()
        wait_for(lambda i=i: node_count(a) == i + 1, f"{i + 1} nodes")  # type: ignore[misc]
    assert not (a.store / "epoch" / f"{2:08d}").exists()
    for n in (a, b, c):
        n.wait_running()
    seen = [epoch_lines(n) for n in (a, b, c)]
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][2] == f"127.0.0.1:{b.port}:128"
    # Kept: the next question is answered from A's own log.
    assert (a.store / "epoch" / f"{2:08d}").exists()
