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
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, run_dog
from test_cluster_daemon import node_count, recovered, running, wait_for
from test_nbd_cluster import Writer
from test_nbd_plugin import MIB, RANDOM_IO, export, libnbd

from sheepblk import erasure_code
from sheepblk.client import SheepClient, SheepdogError, Vdi
from sheepblk.proto import ForwArgs, Op, Res, SdNode, ec, vid_to_data_oid
from sheepblk.ring import Ring

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
            assert erasure_code.decode({i: got[i] for i in subset}, D, P) == want, (oid, subset)


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

    # Flipped bits in two strips of an object (at different places):
    # `dog vdi check` finds both and rebuilds them.
    victim = next(f for f in sorted((nodes[1].store / "obj").iterdir())
                  if f.is_file() and len(f.name) == 16 and not int(f.name, 16) >> 56
                  and int(f.name, 16) >> 32 == _vid(a, "Alice"))
    for node, at in ((nodes[1], 1000), (nodes[4], 700_000)):
        f = node.store / "obj" / victim.name
        raw = bytearray(f.read_bytes())
        raw[at] ^= 0x10
        f.write_bytes(raw)
    out = run_dog(a, "vdi", "check", "Alice")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().count(f"of {int(victim.name, 16):x}\n") == 2, out.stdout
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
    with a.client() as c:  # not through dog: the daemon refuses it too
        with pytest.raises(SheepdogError) as e:
            c.create_vdi("Alice", 8 * MIB, copies=D + P, copy_policy=ec.policy_of(D, P))
        assert e.value.result == Res.INVALID_PARMS
    assert run_dog(a, "vdi", "create", "-c", "2:1", "Bob", "8M").returncode == 0
    assert run_dog(a, "vdi", "create", "Carol", "8M").returncode == 0
    out = run_dog(a, "vdi", "alter-copy", "-c", "2:1", "Carol", check=False)
    assert out.returncode != 0 and b"cannot be set on an existing vdi" in out.stderr, out
    listing = run_dog(a, "vdi", "list").stdout.decode()
    assert "Alice" not in listing
    bob = next(ln for ln in listing.splitlines() if "Bob" in ln)
    carol = next(ln for ln in listing.splitlines() if "Carol" in ln)
    assert " 2:1 " in bob and " 2:1 " not in carol


def test_every_path_on_four_two(sheep_factory: SheepFactory, tmp_path: Path) -> None:
    """QEMU's requests (snapshots: copy-on-write from strips, unaligned
    writes), dog's snapshot, clone, backup and rollback, and sheepfs, on
    a 4:2 cluster; an object-level op for replicas is refused."""
    from qemu_replay import QemuDisk

    nodes = ec_cluster(sheep_factory)
    a = nodes[0]
    objects = 4
    with a.client() as c:
        c.create_vdi("snaps", objects * OBJ)
    model = bytearray(objects * OBJ)
    for round_, gateway in enumerate(nodes[:3]):
        disk = QemuDisk(gateway.port, "snaps").open()
        for idx in range(objects):
            data = os.urandom(512)
            off = idx * OBJ + 512 * round_ + 100 * idx  # aligned and not
            disk.writev(off, data)
            model[off:off + 512] = data
        disk.snapshot(f"tag{round_}")
        disk.close()
    disk = QemuDisk(nodes[4].port, "snaps").open()
    for idx in range(objects):
        disk.writev(idx * OBJ + 4000, b"w" * 100)
        model[idx * OBJ + 4000:idx * OBJ + 4100] = b"w" * 100
    assert disk.readv(0, objects * OBJ) == model
    disk.close()
    assert vdi_bytes(nodes[5], "snaps", objects * OBJ) == model

    def ok(*args: str, input: bytes | None = None) -> bytes:
        out = run_dog(a, *args, input=input, check=False)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    v1 = os.urandom(8 * MIB)
    ok("vdi", "create", "B", "8M")
    ok("vdi", "write", "B", input=v1)
    ok("vdi", "snapshot", "-s", "s1", "B")
    ok("vdi", "write", "B", "4M", "512", input=b"z" * 512)
    ok("vdi", "snapshot", "-s", "s2", "B")
    stream = ok("vdi", "backup", "-F", "s1", "-s", "s2", "B")
    assert stream[24:536] == b"z" * 512 and len(stream) == 8 + 16 + 512 + 16
    assert ok("vdi", "read", "-s", "s1", "B") == v1
    ok("vdi", "clone", "-s", "s1", "B", "C")
    assert ok("vdi", "read", "C") == v1
    ok("vdi", "write", "C", "1000", input=b"c" * 5000)
    assert ok("vdi", "read", "C", "0", "8M") == v1[:1000] + b"c" * 5000 + v1[6000:]
    ok("vdi", "rollback", "-f", "-s", "s1", "B")
    assert ok("vdi", "read", "B") == v1
    clone = next(ln for ln in ok("vdi", "list").decode().splitlines() if ln.startswith("c C "))
    assert " 4:2 " in clone, clone
    assert "finish check&repair B" in ok("vdi", "check", "B").decode()

    # A cluster snapshot of erasure-coded VDIs, loaded into a new format.
    ok("cluster", "snapshot", "save", "one", str(tmp_path / "archive"))
    ok("cluster", "snapshot", "load", "one", str(tmp_path / "archive"))
    wait_for(lambda: all(running(x) for x in nodes), "all nodes running")
    assert ok("vdi", "read", "C", "0", "8M") == v1[:1000] + b"c" * 5000 + v1[6000:]
    assert ok("vdi", "read", "-s", "s1", "B") == v1
    with a.client() as c:
        on_disk = strips_on_disk(nodes, c.lookup_vdi("C").vid)
    assert on_disk and all(len(got) == D + P for got in on_disk.values())

    # An object-level op that copies a whole replica: each node has its
    # own strip, so it is refused.
    with a.client() as c:
        oid = vid_to_data_oid(c.lookup_vdi("C").vid, 0)
        owners = ec_owners(c, oid)
    target = next(n for n in nodes if n.port == owners[1].nid.port)
    with target.client() as c:
        rsp, _ = c.request(Op.REPAIR_REPLICA, ForwArgs(oid, owners[0].nid).pack(), check=False)
        assert rsp.result == Res.NO_SUPPORT

    if not os.path.exists("/dev/fuse"):
        return
    from test_sheepfs import dd, mounted

    ok("vdi", "create", "F", "16M")
    fmodel = bytearray(16 * MIB)
    src = tmp_path / "src"
    data = os.urandom(6 * MIB)
    src.write_bytes(data)
    with mounted(a, tmp_path) as m:
        vol = m / "volume/F"
        dd(f"if={src}", f"of={vol}", "bs=1M", "seek=3", "conv=notrunc,fdatasync")
        fmodel[3 * MIB:9 * MIB] = data
        with open(vol, "r+b") as f:
            f.seek(5 * MIB + 123)
            f.write(b"x" * 300_000)
            os.fsync(f.fileno())
        fmodel[5 * MIB + 123:5 * MIB + 123 + 300_000] = b"x" * 300_000
        assert vol.read_bytes() == fmodel
    assert vdi_bytes(nodes[2], "F", 16 * MIB) == fmodel


def ec_owners(c: SheepClient, oid: int) -> tuple[SdNode, ...]:
    """The nodes holding strips 0.. of `oid`, by the daemons' recipe."""
    ring = Ring(c.node_list())
    return ring.oid_to_nodes(oid, D + P)[:ring.nr_zones]
