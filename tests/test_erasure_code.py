"""Erasure-coded VDIs (issue 15) on real `sheep` processes: a 4:2 cluster of
six nodes stores strips, not copies; an NBD write stream goes on while two
nodes die and every acknowledged byte reads back; a third loss halts I/O
with the usual error (never wrong bytes); the nodes come back and recovery
restores all six strips of every object, each 4-subset of them decoding
to the same bytes (read from the stores' files directly); a flipped bit in
one strip is found and repaired by `dog vdi check`. And bad requests for
erasure code get clear errors with nothing changed.

Every process is one this test started, stopped by its pid; waits are
generous polls, no timing thresholds.
"""

from __future__ import annotations

import itertools
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, run_dog
from test_cluster_daemon import node_count, recovered, running, wait_for
from test_nbd_cluster import Writer
from test_nbd_plugin import MIB, RANDOM_IO, export, libnbd

from sheepblk.client import SheepdogError, Vdi
from sheepblk.proto import Res, ec

D, P = 4, 2
SIZE = 24 * MIB
OBJ = 4 * MIB


def ec_cluster(sheep_factory: SheepFactory, n: int = 6) -> list[SheepProcess]:
    nodes = sheep_factory.start(n)
    wait_for(lambda: node_count(nodes[0]) == n, f"{n} nodes")
    out = run_dog(nodes[0], "cluster", "format", "-c", f"{D}:{P}")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: all(running(x) for x in nodes), "all nodes running")
    return nodes


def strips_on_disk(nodes: list[SheepProcess], vid: int) -> dict[int, dict[int, bytes]]:
    """Data oid -> {strip index: strip} of VDI `vid` (4:2) from every
    node's obj/ files."""
    out: dict[int, dict[int, bytes]] = defaultdict(dict)
    for node in nodes:
        for f in (node.store / "obj").iterdir():
            if not f.is_file() or len(f.name) != 16:
                continue
            oid = int(f.name, 16)
            if oid >> 56 or oid >> 32 != vid:
                continue  # inodes and the like (replicated), other VDIs
            raw = f.read_bytes()
            assert len(raw) == ec.stored_size(OBJ, D), f"{f}: {len(raw)} bytes"
            idx = ec.trailer_index(raw, D, P)
            assert idx is not None, f"{f} is no strip"
            assert idx not in out[oid], f"two strips {idx} of {oid:x}"
            out[oid][idx] = raw[:-ec.TRAILER_SIZE]
    return out


def vdi_bytes(node: SheepProcess, name: str, size: int) -> bytes:
    with node.client() as c, Vdi(c, name) as v:
        return b"".join(v.pread(OBJ, off) for off in range(0, size, OBJ))


def check_strips(nodes: list[SheepProcess], name: str, size: int) -> None:
    """Every object has all D+P strips, and each D-subset decodes to the
    bytes the VDI reads."""
    data = vdi_bytes(nodes[0], name, size)
    with nodes[0].client() as c:
        vid = c.lookup_vdi(name).vid
    strips = strips_on_disk(nodes, vid)
    assert strips
    for oid, got in strips.items():
        assert sorted(got) == list(range(D + P)), f"{oid:x} has strips {sorted(got)}"
        idx = oid & 0xFFFFFFFF
        want = data[idx * OBJ:(idx + 1) * OBJ]
        for subset in itertools.combinations(range(D + P), D):
            assert ec.decode({i: got[i] for i in subset}, D, P) == want, (oid, subset)


@pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit not installed")
@pytest.mark.expected_errors
def test_four_two_survives_two_losses_halts_at_three_and_recovers(
        sheep_factory: SheepFactory, tmp_path: Path) -> None:
    nodes = ec_cluster(sheep_factory)
    a = nodes[0]
    assert run_dog(a, "vdi", "create", "Alice", str(SIZE)).returncode == 0
    assert run_dog(a, "vdi", "create", "-c", "2:1", "Bob", str(SIZE)).returncode == 0
    listing = run_dog(a, "vdi", "list").stdout.decode()
    assert " 4:2 " in listing and " 2:1 " in listing, listing
    assert "with 4:2 redundancy policy" in run_dog(a, "cluster", "info", "-v").stdout.decode()

    # The libnbd random I/O against a model, on both codes.
    for name in ("Alice", "Bob"):
        with export(tmp_path, a.port, f"vdi={name}", name=name) as nk:
            libnbd(nk.sock, RANDOM_IO, SIZE, 77, 120)
    check_strips(nodes, "Alice", SIZE)
    # Space: a strip per node, each a quarter of an object (and a trailer).
    on_disk = strips_on_disk(nodes, _vid(a, "Alice"))
    stored = sum(len(s) for got in on_disk.values() for s in got.values())
    assert stored == len(on_disk) * (D + P) * OBJ // D

    # Two nodes die under a write stream: every acknowledged byte reads back.
    assert run_dog(a, "vdi", "create", "Carol", str(SIZE)).returncode == 0
    with export(tmp_path, a.port, "vdi=Carol", name="stream") as nk:
        w = Writer(nk.sock, tmp_path / "stop")
        w.wait_more(30)
        nodes[2].kill9()
        w.wait_more(20)
        nodes[4].kill9()
        wait_for(lambda: node_count(a) == 4, "4 nodes")
        w.wait_more(40)
        w.finish()  # reads every byte back through NBD against its model
    alive = [nodes[i] for i in (0, 1, 3, 5)]
    before = vdi_bytes(a, "Alice", SIZE)

    # A third loss: fewer than D zones. I/O halts, it reads no wrong bytes.
    wait_for(lambda: recovered(alive), "recovery on 4 nodes")
    nodes[5].kill9()
    wait_for(lambda: node_count(a) == 3, "3 nodes")
    with a.client() as c:
        with pytest.raises(SheepdogError) as e:
            with Vdi(c, "Alice") as v:
                v.pread(4096, 0)
        assert e.value.result == Res.HALT

    # They come back: recovery rebuilds the strips each owner should hold.
    for i in (2, 4, 5):
        nodes[i].start()
    wait_for(lambda: node_count(a) == 6, "6 nodes again")
    wait_for(lambda: all(running(x) for x in nodes) and recovered(nodes), "recovery")
    assert vdi_bytes(nodes[3], "Alice", SIZE) == before
    wait_for(lambda: _all_strips(nodes, _vid(a, "Alice")), "all strips back")
    check_strips(nodes, "Alice", SIZE)

    # A flipped bit in one strip: `dog vdi check` finds it and rebuilds it.
    victim = next(f for f in sorted((nodes[1].store / "obj").iterdir())
                  if f.is_file() and len(f.name) == 16 and not int(f.name, 16) >> 56
                  and int(f.name, 16) >> 32 == _vid(a, "Alice"))
    raw = bytearray(victim.read_bytes())
    raw[1000] ^= 0x10
    victim.write_bytes(raw)
    out = run_dog(a, "vdi", "check", "Alice")
    assert out.returncode == 0, out.stderr
    assert f"of {int(victim.name, 16):x}" in out.stdout.decode(), out.stdout
    check_strips(nodes, "Alice", SIZE)
    assert vdi_bytes(a, "Alice", SIZE) == before
    again = run_dog(a, "vdi", "check", "Alice").stdout.decode()
    assert "fixed" not in again, again


def _vid(node: SheepProcess, name: str) -> int:
    with node.client() as c:
        return c.lookup_vdi(name).vid


def _all_strips(nodes: list[SheepProcess], vid: int) -> bool:
    return all(len(got) == D + P for got in strips_on_disk(nodes, vid).values())


def test_bad_erasure_code_requests_change_nothing(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(3)
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    a = nodes[0]
    for bad in ("3:1", "4:16", "4:0", "5:2"):
        out = run_dog(a, "cluster", "format", "-c", bad, check=False)
        assert out.returncode != 0 and b"Invalid parameter" in out.stderr, (bad, out)
    out = run_dog(a, "cluster", "format", "-c", "4:2", check=False)
    assert out.returncode != 0, out
    assert b"needs 6 zones" in out.stderr and b"has 3" in out.stderr, out.stderr
    assert run_dog(a, "cluster", "format", "-c", "2").returncode == 0
    wait_for(lambda: all(running(x) for x in nodes), "all nodes running")
    out = run_dog(a, "vdi", "create", "-c", "4:2", "Alice", "8M", check=False)
    assert out.returncode != 0 and b"needs 6 zones" in out.stderr, out
    assert run_dog(a, "vdi", "create", "-c", "2:1", "Bob", "8M").returncode == 0
    assert run_dog(a, "vdi", "create", "Carol", "8M").returncode == 0
    out = run_dog(a, "vdi", "alter-copy", "-c", "2:1", "Carol", check=False)
    assert out.returncode != 0 and b"cannot be set on an existing vdi" in out.stderr, out
    listing = run_dog(a, "vdi", "list").stdout.decode()
    assert "Alice" not in listing
    bob = next(ln for ln in listing.splitlines() if "Bob" in ln)
    carol = next(ln for ln in listing.splitlines() if "Carol" in ln)
    assert " 2:1 " in bob and " 2:1 " not in carol
