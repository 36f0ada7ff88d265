"""The vnodes strategies with real sheep and dog: what Sheepdog's tests
111 and 115-118 check, in our own words. `sheep -V N` runs a node of
the fixed strategy, a sheep without -V one of the auto strategy; a
cluster is formatted for one (`dog cluster format` with or without -V),
and a sheep started for the other cannot format, join or restart into it.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import SheepFactory, SheepProcess, bin_path, run_dog, wait_for

from sheepblk.store import load_node_space


def epochs(node: SheepProcess) -> list[str]:
    """The epoch lines of `dog cluster info`, newest first, without dates."""
    out = run_dog(node, "cluster", "info").stdout.decode().splitlines()
    return [line[20:].strip() for line in out if line[:4].isdigit()]


def test_format_refuses_the_other_strategy(sheep_factory: SheepFactory) -> None:
    (auto,) = sheep_factory.start(1)
    got = run_dog(auto, "cluster", "format", "-V", "-c", "1", check=False)
    assert got.returncode == 1
    assert got.stderr.decode() == ("Can not apply the option of '-V', because there are vnode "
                                   "strategy of sheep is auto in the cluster\n")
    (fixed,) = sheep_factory.start(1, cluster=auto.cluster, extra=["-V", "100"])
    # A cluster of both kinds: neither format will do.
    got = run_dog(fixed, "cluster", "format", "-c", "1", check=False)
    assert got.returncode == 1
    assert got.stderr.decode().startswith("Need to specify the option of '-V'")
    got = run_dog(fixed, "cluster", "format", "-V", "-c", "1", check=False)
    assert got.returncode == 1
    assert got.stderr.decode().startswith("Can not apply the option of '-V'")


def test_fixed_cluster_formats_with_v_and_keeps_each_nodes_vnodes(
        sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1, extra=["-V", "100"])
    (b,) = sheep_factory.start(1, cluster=a.cluster, extra=["-V", "300"])
    got = run_dog(a, "cluster", "format", "-c", "1", check=False)
    assert got.stderr.decode() == ("Need to specify the option of '-V', because there are "
                                   "vnode strategy of sheep is fixed in the cluster\n")
    run_dog(a, "cluster", "format", "-V", "-c", "1")
    assert epochs(a) == [_epoch(1, a, b, 100, 300)]
    info = run_dog(a, "cluster", "info", "-v").stdout.decode()
    assert "Cluster vnodes strategy: fixed\nCluster vnode mode: node\n" in info


def _epoch(n: int, a: SheepProcess, b: SheepProcess, va: int, vb: int) -> str:
    pairs = sorted([(a.port, va), (b.port, vb)])
    return f"{n} [" + ", ".join(f"127.0.0.1:{p}:{v}" for p, v in pairs) + "]"


@pytest.mark.expected_errors(r"refusing to start: sheep -V 42 differs from the 100 vnodes",
                             r"refusing to start: the stored cluster's vnodes strategy is fixed")
def test_a_restart_must_repeat_the_strategy_and_vnodes(sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1, extra=["-V", "100"])
    run_dog(a, "cluster", "format", "-V", "-c", "1")
    a.stop()
    for extra in (["-V", "42"], []):
        a.extra = extra
        a.start(wait=False)
        assert a.proc is not None
        assert a.proc.wait(60) == 1  # exits on its own, before it listens
    a.extra = ["-V", "100"]
    a.start()
    a.wait_running()


@pytest.mark.expected_errors(r"leaving the cluster: refusing to join: the cluster's vnodes "
                             r"strategy is auto")
def test_a_joiner_of_the_other_strategy_leaves_after_an_epoch(
        sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1)
    run_dog(a, "cluster", "format", "-c", "1")
    (b,) = sheep_factory.start(1, cluster=a.cluster, extra=["-V", "400"])
    assert b.proc is not None
    assert b.proc.wait(60) == 1
    wait_for(lambda: len(epochs(a)) == 3, "the epoch without the joiner")
    assert epochs(a)[0] == f"3 [127.0.0.1:{a.port}:128]"
    assert epochs(a)[1].startswith("2 [")


def test_node_vnodes_set(sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1, extra=["-V", "100"])
    run_dog(a, "cluster", "format", "-V", "-c", "1")
    for bad in ("0", "65536", "-1", "42a", "+"):
        got = subprocess.run([bin_path("dog"), "node", "vnodes", "set", "-p", str(a.port),
                              "--", bad], capture_output=True, timeout=60)
        assert got.returncode == 64
        assert got.stderr.decode() == (f"Invalid number of vnodes '{bad}': must be an "
                                       "integer between 1 and 65535\n")
    run_dog(a, "node", "vnodes", "set", "65535")
    wait_for(lambda: len(epochs(a)) == 2, "the epoch of the new vnodes")
    assert epochs(a) == [f"2 [127.0.0.1:{a.port}:65535]", f"1 [127.0.0.1:{a.port}:100]"]


def test_node_vnodes_set_is_refused_under_auto(sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1)
    run_dog(a, "cluster", "format", "-c", "1")
    got = run_dog(a, "node", "vnodes", "set", "42", check=False)
    assert (got.returncode, got.stderr.decode()) == (1, "Failed to execute request\n")


def test_the_space_a_node_announces_is_kept_across_restarts(
        sheep_factory: SheepFactory) -> None:
    (a,) = sheep_factory.start(1)
    first = load_node_space(a.store)
    assert first > 0
    (a.store / "space").write_text("12345\n")  # as if the disk had filled since
    a.stop()
    a.start()
    with a.client() as c:
        wait_for(lambda: len(c.node_list()) == 1, "the node's own join")
        (me,) = c.node_list()
    assert me.space == 12345


def test_reweight_announces_a_changed_space(sheep_factory: SheepFactory) -> None:
    """`dog cluster reweight` measures each node again; one whose space
    changed announces it, which makes an epoch (Sheepdog's tests 064, 113)."""
    (a,) = sheep_factory.start(1)
    run_dog(a, "cluster", "format", "-c", "1")
    a.stop()
    (a.store / "space").write_text("12345\n")  # as if it had been measured small
    a.start()
    a.wait_running()
    run_dog(a, "cluster", "reweight")
    wait_for(lambda: len(epochs(a)) == 2, "the epoch of the new space")
    assert load_node_space(a.store) > 12345
    with a.client() as c:
        (me,) = c.node_list()
    assert me.space == load_node_space(a.store)
    run_dog(a, "cluster", "reweight")  # nothing changed since: no epoch
    assert len(epochs(a)) == 2
