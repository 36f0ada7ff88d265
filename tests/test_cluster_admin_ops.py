"""Cluster-wide admin switches of real `sheep` processes: `dog cluster
recover disable|enable` (ENABLE/DISABLE_RECOVER), `dog cluster alter-copy`
and `dog vdi alter-copy` (ALTER_CLUSTER_COPY / ALTER_VDI_COPY), and a VDI
created where no node stores data. No timing thresholds: a suspended
recovery starts no object at all, so what is checked cannot race it."""

from __future__ import annotations

import os
import subprocess
from collections import Counter

from conftest import SheepFactory, SheepProcess, bin_path, run_dog, wait_for
from test_cluster_daemon import node_count, objects, recovered, running, three

from sheepblk.client import Vdi

MiB = 1 << 20
WAIT = 120.0


def progress(node: SheepProcess) -> tuple[int, int] | None:
    with node.client(pool_size=1) as c:
        st = c.stat_recovery()
    return (st.nr_finished, st.nr_total) if st.in_recovery else None


def status_line(node: SheepProcess) -> str:
    return run_dog(node, "cluster", "info").stdout.decode().splitlines()[0]


def copies_held(nodes: list[SheepProcess]) -> Counter[str]:
    """object name -> how many nodes hold it in obj/."""
    held: Counter[str] = Counter()
    for n in nodes:
        held.update(objects(n).keys())
    return held


def test_disabled_recovery_waits_for_enable(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=3, copies=2)
    out = run_dog(nodes[0], "cluster", "recover", "disable")
    assert out.stdout == b"Cluster recovery: disable\n"
    for n in nodes:  # every node has the switch, whichever was asked
        assert status_line(n) == "Cluster status: running, auto-recovery disabled"
    with nodes[0].client() as c:
        c.create_vdi("T", 16 * MiB, block_size_shift=20)
    data = bytes(range(256)) * (16 * MiB // 256)
    with nodes[0].client() as c, Vdi(c, "T") as v:
        v.pwrite(data, 0)
    nodes[2].kill9()
    live = nodes[:2]
    wait_for(lambda: node_count(live[0]) == 2, "2 nodes", WAIT)
    # Each survivor lists what it lacks, then starts nothing.
    wait_for(lambda: all((p := progress(n)) is not None and p[1] > 0 for n in live),
             "object lists built", WAIT)
    assert all(progress(n) == (0, p[1]) for n in live if (p := progress(n)))
    # A client still reads everything (what it asks for is pulled first).
    with live[1].client() as c, Vdi(c, "T", writable=False) as v:
        assert v.pread(MiB, 0) == data[:MiB]
    out = run_dog(live[0], "cluster", "recover", "enable")
    assert out.stdout == b"Cluster recovery: enable\n"
    assert status_line(live[1]) == "Cluster status: running, auto-recovery enabled"
    wait_for(lambda: recovered(live) and all(v == 2 for v in copies_held(live).values()),
             "recovery done", WAIT)
    with live[0].client() as c, Vdi(c, "T", writable=False) as v:
        assert v.pread(16 * MiB, 0) == data


def test_a_joining_node_takes_the_disabled_switch(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=2, copies=2)
    run_dog(nodes[0], "cluster", "recover", "disable")
    (late,) = sheep_factory.start(1, cluster=nodes[0].cluster)
    wait_for(lambda: node_count(nodes[0]) == 3 and running(late), "3 nodes", WAIT)
    assert status_line(late) == "Cluster status: running, auto-recovery disabled"


def test_cluster_alter_copy(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=3, copies=3)
    same = run_dog(nodes[0], "cluster", "alter-copy", "-c", "3", check=False)
    assert same.returncode == 1
    assert same.stderr == b"The cluster's redundancy level is already set to 3, nothing changed.\n"
    out = run_dog(nodes[0], "cluster", "alter-copy", "-c", "2", input=b"yes\n")
    assert out.stderr == b"The cluster's redundancy level is set to 2, the old one was 3.\n"
    assert out.stdout.endswith(b"Are you sure you want to continue? [yes/no]: ")
    info = run_dog(nodes[1], "cluster", "info", "-v").stdout.decode()
    assert "Cluster store: plain with 2 redundancy policy" in info
    run_dog(nodes[2], "vdi", "create", "new", "4M")
    assert "new " in run_dog(nodes[2], "vdi", "list").stdout.decode()
    with nodes[0].client() as c:
        assert c.lookup_vdi("new").copies == 2


def test_vdi_alter_copy_moves_the_objects(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=4, copies=2)
    run_dog(nodes[0], "vdi", "create", "v", "8M", "-P")
    wait_for(lambda: recovered(nodes), "settled", WAIT)
    assert set(copies_held(nodes).values()) == {2}
    out = run_dog(nodes[0], "vdi", "alter-copy", "v", "-c", "3", input=b"yes\n")
    assert out.stderr == b"v's redundancy level is set to 3, the old one was 2.\n"
    wait_for(lambda: recovered(nodes) and set(copies_held(nodes).values()) == {3},
             "3 copies of each object", WAIT)
    row = run_dog(nodes[1], "vdi", "list", "-r").stdout.decode().split()
    assert row[8] == "3", row  # the Copies column
    run_dog(nodes[0], "vdi", "alter-copy", "v", "-c", "1", "-f")
    wait_for(lambda: recovered(nodes) and set(copies_held(nodes).values()) == {1},
             "one copy of each object", WAIT)
    same = run_dog(nodes[0], "vdi", "alter-copy", "v", "-c", "1", check=False)
    assert same.stderr == b"v's redundancy level is already set to 1, nothing changed.\n"


def test_vdi_alter_copy_refuses_shared_objects(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=2, copies=2)
    run_dog(nodes[0], "vdi", "create", "v", "4M")
    run_dog(nodes[0], "vdi", "snapshot", "-s", "s1", "v")
    out = run_dog(nodes[0], "vdi", "alter-copy", "v", "-c", "1", check=False)
    assert out.returncode == 1
    assert out.stderr.decode().splitlines() == [
        "Only standalone vdi supports changing redundancy level.",
        "Please clone v with -n (--no-share) option first."]


def test_alter_copy_refuses_erasure_coding(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, n=3, copies=3)
    out = run_dog(nodes[0], "cluster", "alter-copy", "-c", "2:1", check=False)
    assert out.returncode == 64
    assert out.stderr == b"Changing redundancy level of erasure coded vdi is not supported yet.\n"
    assert out.stdout.startswith(b"Usage: dog cluster alter-copy [-a address] [-p port]")
    bad = run_dog(nodes[0], "vdi", "alter-copy", "v", "-c", "x", check=False)
    assert bad.returncode == 1
    assert bad.stderr.decode().splitlines()[:2] == [
        "Invalid parameter x", "To create replicated vdi, set -c x"]


def test_vdi_create_without_data_nodes(sheep_factory: SheepFactory) -> None:
    """Only gateways: the VDI's inode cannot be written anywhere, which is
    what dog reports (Sheepdog's test 022), not a halted cluster."""
    nodes = sheep_factory.start(3, extra=["-g"])
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes", WAIT)
    run_dog(nodes[0], "cluster", "format", "-c", "3")
    out = run_dog(nodes[0], "vdi", "create", "test", "100M", check=False)
    assert out.returncode == 1
    assert out.stderr == b"Failed to create VDI test: Failed to write to requested VDI\n"


def test_prompt_stays_behind_later_stderr_in_one_stream(sheep_factory: SheepFactory) -> None:
    """stdout and stderr into one file, Python unbuffered: the prompt is
    still held back as C's stdio holds it, so the line dog writes to
    stderr after the answer comes first (Sheepdog's 096.out)."""
    nodes = three(sheep_factory, n=2, copies=2)
    out = subprocess.run(
        [bin_path("dog"), "cluster", "alter-copy", "-c", "1", "-p", str(nodes[0].port)],
        input=b"yes\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=True)
    assert out.stdout.decode().splitlines() == [
        "The cluster's redundancy level is set to 1, the old one was 2.",
        "    __", "   ()'`;",
        "   /\\|`  Caution! Changing cluster's redundancy level will affect",
        "  /  |   all the VDIs to be created later.",
        "(/_)_|_  Are you sure you want to continue? [yes/no]: "]
