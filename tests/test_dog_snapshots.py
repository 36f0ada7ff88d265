"""dog's copy-on-write family against real sheep: snapshot, clone,
rollback, tree, graph, attributes, locks, backup."""

from __future__ import annotations

import os

from conftest import SheepProcess
from test_dog import fails, ok, vdi_rows

MIB = 1 << 20


def test_snapshot_clone_rollback(one_node: SheepProcess) -> None:
    v1 = os.urandom(6 * MIB)
    ok(one_node, "vdi", "create", "Alice", "8M")
    ok(one_node, "vdi", "write", "Alice", input=v1)
    ok(one_node, "vdi", "snapshot", "-s", "snap1", "Alice")
    assert "is existed" in fails(one_node, "vdi", "snapshot", "-s", "snap1", "Alice", code=1)

    rows = vdi_rows(one_node)
    assert [(r[0], r[1], r[2], r[9]) for r in rows] == [("s", "Alice", "1", "snap1"),
                                                         ("=", "Alice", "0", "")]
    snap, work = rows
    assert (snap[4], snap[5]) == (str(8 * MIB), "0")  # the snapshot owns both objects
    assert (work[4], work[5]) == ("0", str(8 * MIB))  # the working VDI shares them

    v2 = os.urandom(MIB)
    ok(one_node, "vdi", "write", "Alice", "1M", input=v2)
    expect_now = v1[:MIB] + v2 + v1[2 * MIB:]
    assert ok(one_node, "vdi", "read", "Alice", "0", "6M") == expect_now
    assert ok(one_node, "vdi", "read", "-s", "snap1", "Alice", "0", "6M") == v1
    assert ok(one_node, "vdi", "read", "-s", "1", "Alice", "0", "6M") == v1

    ok(one_node, "vdi", "clone", "-s", "snap1", "Alice", "Charlie")
    assert ok(one_node, "vdi", "read", "Charlie", "0", "6M") == v1
    kinds = {(r[0], r[1]) for r in vdi_rows(one_node)}
    assert ("c", "Charlie") in kinds

    ok(one_node, "vdi", "clone", "-n", "-s", "snap1", "Alice", "Dave")
    dave = [r for r in vdi_rows(one_node) if r[1] == "Dave"][0]
    assert (dave[0], dave[4], dave[5]) == ("=", str(8 * MIB), "0")  # its own copy
    assert ok(one_node, "vdi", "read", "Dave", "0", "6M") == v1

    tree = ok(one_node, "vdi", "tree").decode().splitlines()
    assert tree[0].startswith("Alice---[") and tree[0].endswith("]---(you are here)")
    assert "Charlie---(you are here)" in tree

    graph = ok(one_node, "vdi", "graph").decode()
    assert graph.startswith("digraph G {\n") and graph.endswith("}\n")
    assert 'group = "Charlie"' in graph

    ok(one_node, "vdi", "rollback", "-f", "-s", "snap1", "Alice")
    assert ok(one_node, "vdi", "read", "Alice", "0", "6M") == v1
    ok(one_node, "vdi", "delete", "-s", "snap1", "Alice")
    assert ok(one_node, "vdi", "read", "Charlie", "0", "6M") == v1


def test_attributes(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "A", "4M")
    ok(one_node, "vdi", "setattr", "A", "key", "value")
    assert ok(one_node, "vdi", "getattr", "A", "key") == b"value"
    ok(one_node, "vdi", "setattr", "A", "fromstdin", input=b"piped value")
    assert ok(one_node, "vdi", "getattr", "A", "fromstdin") == b"piped value"
    assert fails(one_node, "vdi", "setattr", "-x", "A", "key", "again", code=3) == \
        "The attribute 'key' already exists"
    ok(one_node, "vdi", "setattr", "-d", "A", "key")
    assert fails(one_node, "vdi", "getattr", "A", "key", code=5) == "Attribute 'key' not found"
    assert fails(one_node, "vdi", "getattr", "Nobody", "key", code=5) == "VDI not found"


def test_object_map_and_lock_list(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "M", "12M")
    ok(one_node, "vdi", "write", "M", "8M", input=b"y" * 10)
    (row,) = vdi_rows(one_node)
    vid = row[7]
    assert ok(one_node, "vdi", "object", "map", "M").decode() == \
        f"Index       VID\n00000002 {vid:>8s}\n"
    loc = ok(one_node, "vdi", "object", "-i", "2", "M").decode()
    assert f"127.0.0.1:{one_node.port} has the object" in loc
    assert ok(one_node, "vdi", "lock", "list").decode() == \
        "  Name         Id  VDI id  Tag            Owner node(s)\n"
    assert fails(one_node, "vdi", "lock", "unlock", "M", code=1).endswith("is not locked")


def test_backup_between_snapshots(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "B", "8M")
    ok(one_node, "vdi", "write", "B", input=os.urandom(8 * MIB))
    ok(one_node, "vdi", "snapshot", "-s", "s1", "B")
    ok(one_node, "vdi", "write", "B", "4M", "512", input=b"z" * 512)
    ok(one_node, "vdi", "snapshot", "-s", "s2", "B")
    stream = ok(one_node, "vdi", "backup", "-F", "s1", "-s", "s2", "B")
    # header, one record of one sector, end marker
    assert len(stream) == 8 + 16 + 512 + 16
    assert stream[8:24] == (1).to_bytes(4, "little") + bytes(4) + (512).to_bytes(4, "little") + bytes(4)
    assert stream[24:536] == b"z" * 512


def test_vdi_check_compares_replicas(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "C", "8M")
    ok(one_node, "vdi", "write", "C", input=os.urandom(MIB))
    assert ok(one_node, "vdi", "check", "C").decode().endswith("finish check&repair C\n")


def test_vdi_check_repairs_a_differing_and_a_missing_copy(sheep_factory) -> None:  # type: ignore[no-untyped-def]
    """Three nodes, three copies: one copy of object 0 is corrupted, one
    copy of object 1 is removed; check reports both fixed (the majority
    wins, as in C dog), and a second pass and the data are clean. With two
    copies that disagree there is no majority: reported, nothing changed."""
    nodes = sheep_factory.start(3)
    with nodes[0].client() as c:
        c.make_fs(copies=3)
    data = os.urandom(8 * MIB)
    ok(nodes[0], "vdi", "create", "R", "8M")
    ok(nodes[0], "vdi", "write", "R", input=data)
    vid = int([r for r in vdi_rows(nodes[0]) if r[1] == "R"][0][7], 16)
    files = {i: [n.store / "obj" / f"{(vid << 32) | i:016x}" for n in nodes] for i in (0, 1)}
    assert all(f.exists() for fs in files.values() for f in fs)
    with open(files[0][1], "r+b") as f:
        f.seek(100)
        f.write(b"corrupt!")
    files[1][0].unlink()
    out = ok(nodes[0], "vdi", "check", "R").decode()
    assert f"fixed replica {vid << 32:x}" in out
    assert f"fixed missing {(vid << 32) | 1:x}" in out
    assert out.endswith("finish check&repair R\n")
    for fs in files.values():
        assert fs[0].read_bytes() == fs[1].read_bytes() == fs[2].read_bytes()
    assert ok(nodes[0], "vdi", "check", "R").decode() == "finish check&repair R\n"
    assert ok(nodes[1], "vdi", "read", "R", "0", "8M") == data
