"""A cluster formatted with `--placement=straw2`: the nodes store each
object where straw2 says (not where Sheepdog's ring would), a joiner learns
the placement with the format, recovery after the join leaves every copy
where the new membership's straw2 puts it, and dog's check and object
location use it too."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, free_port, run_dog
from test_cluster_daemon import node_count, objects, running, wait_for, wait_settled

from sheepblk.client import Vdi
from sheepblk.proto import vid_to_data_oid
from sheepblk.ring import Ring
from sheepblk.straw2 import Straw2Ring

MiB = 1 << 20
COPIES = 2


def placed_by(nodes: list[SheepProcess], ring: Ring | Straw2Ring) -> bool:
    """Every object file is on exactly the nodes `ring` names."""
    where: dict[str, set[int]] = {}
    for n in nodes:
        for name in objects(n):
            where.setdefault(name, set()).add(n.port)
    return bool(where) and all(
        ports == {o.nid.port for o in ring.oid_to_nodes(int(name, 16), COPIES)}
        for name, ports in where.items())


def test_straw2_cluster_places_joins_and_checks(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(4)
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    run_dog(nodes[0], "cluster", "format", "--placement=straw2", "-c", str(COPIES))
    wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
    info = run_dog(nodes[1], "cluster", "info", "-v").stdout.decode()
    assert "Cluster placement: straw2" in info, info

    with nodes[0].client() as c:
        vid = c.create_vdi("Alice", 64 * MiB)
        with Vdi(c, "Alice") as v:
            for i in range(16):
                v.pwrite(bytes([i + 1]) * 4096, i * 4 * MiB)
        members = c.node_list()
    assert placed_by(nodes, Straw2Ring(members))
    assert not placed_by(nodes, Ring(members))  # the flag made a difference

    (late,) = sheep_factory.start(1, cluster=nodes[0].cluster)
    everyone = [*nodes, late]
    wait_for(lambda: node_count(nodes[0]) == 5, "5 nodes")
    wait_settled(everyone, COPIES)
    with late.client() as c:
        members = c.node_list()
    assert placed_by(everyone, Straw2Ring(members))
    assert objects(late), "the joiner took its share"

    check = run_dog(late, "vdi", "check", "Alice")
    assert check.returncode == 0, check.stderr
    out = run_dog(late, "vdi", "object", "-i", "3", "Alice").stdout.decode()
    owners = Straw2Ring(members).oid_to_nodes(vid_to_data_oid(vid, 3), COPIES)
    line = out.strip().splitlines()[-1]
    assert re.findall(r":(\d+)", line) == [str(o.nid.port) for o in owners], out
    with late.client() as c, Vdi(c, "Alice", writable=False) as v:
        assert all(bytes(v.pread(4096, i * 4 * MiB)) == bytes([i + 1]) * 4096
                   for i in range(16))


def test_disks_of_two_sizes_fill_at_the_same_rate(sheep_factory: SheepFactory,
                                                  tmp_path: Path) -> None:
    """Four nodes on tmpfs disks of 64 and 128 MiB, auto vnodes, straw2:
    the big disks take twice the objects, so both sizes are about as full.
    1 MiB objects (-z 20), 72 of them: a 2:1 split is 64:32 give or take 5."""
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs disks needs root")
    disks = []
    try:
        for i, mib in enumerate((64, 64, 128, 128)):
            d = tmp_path / f"disk{i}"
            d.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(d)],
                           check=True)
            disks.append(d)
        cluster = f"local:{tmp_path}/shm"
        nodes = []
        for i, d in enumerate(disks):
            n = SheepProcess(d / "store", free_port(), cluster, zone=i)
            sheep_factory.nodes.append(n)
            nodes.append(n.start())
        wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
        run_dog(nodes[0], "cluster", "format", "--placement=straw2", "-c", "1", "-z", "20")
        wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
        with nodes[0].client() as c:
            c.create_vdi("Alice", 72 * MiB)
            with Vdi(c, "Alice") as v:
                for i in range(72):
                    v.pwrite(b"\x01" * 4096, i * MiB)
        # Data objects: vid << 32 | index, so "00..."; the inode is "80...".
        held = [sum(1 for name in objects(n) if name.startswith("00")) for n in nodes]
        small, big = held[0] + held[1], held[2] + held[3]
        assert small + big == 72, held
        fill_small, fill_big = small / 128, big / 256
        assert 0.7 < fill_big / fill_small < 1.45, held
    finally:
        sheep_factory.stop_all()
        for d in disks:
            subprocess.run(["umount", "-l", str(d)], check=False)
