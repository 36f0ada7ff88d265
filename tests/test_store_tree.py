"""The tree store (`dog cluster format -b tree`): objects in the
subdirectories of obj/ where Sheepdog's tree_store.c puts them, as durable
as plain's across a power cut, and a working backend for a cluster (with
recovery and stale copies) and for a multi-disk node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import MdSheepProcess, SheepFactory, SheepProcess, free_port, run_dog, wait_for
from test_cluster_daemon import node_count, recovered, running

from sheepblk.proto import vid_to_data_oid, vid_to_vdi_oid
from sheepblk.store import NoObject, TreeStore

MiB = 1 << 20
VID = 0x7C2B25
INODE = vid_to_vdi_oid(VID)  # 807c2b2500000000
DATA = vid_to_data_oid(VID, 3)  # 007c2b2500000003


def tree_files(root: Path, obj: str = "obj") -> dict[str, Path]:
    """name -> path of every object file under a store's obj/ (stale and
    staging copies left out), wherever it sits; obj="" for a disk of a
    multi-disk node, which holds its objects itself."""
    out = {}
    for p in (root / obj).rglob("*"):
        rel = p.relative_to(root / obj)
        if p.is_file() and len(p.name) == 16 and not rel.parts[0].startswith("."):
            out[p.name] = p
    return out


def test_objects_sit_where_sheepdog_puts_them(tmp_path: Path) -> None:
    """Inode, vmstate and attribute objects in obj/meta/; data, ledger and
    B-tree objects in obj/XX/, XX the low byte of the VDI id."""
    s = TreeStore(tmp_path)
    obj = tmp_path / "obj"
    assert sorted(p.name for p in obj.iterdir() if not p.name.startswith(".")) == \
        sorted(["meta", *(f"{i:02x}" for i in range(256))])
    where = {
        INODE: "meta",
        0x4000000000000000 | (VID << 32) | 1: "meta",  # vmstate
        0x2000000000000000 | (VID << 32) | 2: "meta",  # attribute
        DATA: "25",
        0x0800000000000000 | (VID << 32) | 3: "25",  # ledger
        0x1000000000000000 | (VID << 32) | 4: "25",  # B-tree index
        vid_to_data_oid(0xFD3815, 0): "15",
    }
    for oid in where:
        s.create_and_write(oid, 4096, 0, memoryview(b"x"), sync=True)
    assert {n: str(p.relative_to(obj).parent) for n, p in tree_files(tmp_path).items()} == \
        {f"{oid:016x}": d for oid, d in where.items()}
    assert sorted(s.oids()) == sorted(where)
    s.move_to_stale(DATA, 4)
    assert (obj / ".stale" / f"{DATA:016x}.4").is_file()
    assert list(s.stale_copies()) == [(DATA, 4)]
    assert not s.exists(DATA)
    s.format()
    assert list(s.oids()) == [] and tree_files(tmp_path) == {}
    assert (obj / "meta").is_dir() and (obj / "25").is_dir()


def test_reads_writes_copy_on_write_and_removal(tmp_path: Path) -> None:
    s = TreeStore(tmp_path)
    s.create_and_write(DATA, 4 * MiB, 10, memoryview(b"hello"), sync=False)
    s.write(DATA, 3 * MiB, memoryview(b"world"), sync=False)
    clone = vid_to_data_oid(0xFD3815, 3)
    s.create_and_write(clone, 4 * MiB, 0, memoryview(b"J"), cow_oid=DATA, sync=True)
    buf = memoryview(bytearray(15))
    s.read_into(clone, 0, buf)
    assert bytes(buf) == b"J" + bytes(9) + b"hello"
    s.read_into(clone, 3 * MiB, buf[:5])
    assert bytes(buf[:5]) == b"world"
    fd, size = s.open_read(DATA)  # sendfile from the object's own file
    try:
        assert size == 4 * MiB and os.pread(fd, 5, 10) == b"hello"
    finally:
        os.close(fd)
    s.flush()
    s.remove(DATA)
    with pytest.raises(NoObject):
        s.remove(DATA)
    assert sorted(s.oids()) == [clone]


def _read(s: TreeStore, oid: int, off: int, n: int) -> bytes:
    buf = memoryview(bytearray(n))
    s.read_into(oid, off, buf)
    return bytes(buf)


def test_a_creation_survives_a_power_cut_without_a_flush(tmp_path: Path) -> None:
    """Creations are renamed into obj/XX/ or obj/meta/: that directory,
    not obj/, must be fsync'ed for the name to survive. A synced creation
    keeps its bytes, a cached one its name (zeros at worst)."""
    from powercut import PowerCutFS

    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        root = pc.mountpoint / "store"
        s = TreeStore(root)
        other = vid_to_data_oid(VID + 1, 0)
        s.create_and_write(INODE, 4096, 0, memoryview(b"inode"), sync=True)
        s.create_and_write(DATA, 4 * MiB, 0, memoryview(b"synced"), sync=True)
        s.create_and_write(other, 4 * MiB, 0, memoryview(b"cached"), sync=False)
        pc.crash("all")
        pc.restart()
        s = TreeStore(root)
        assert sorted(s.oids()) == sorted([INODE, DATA, other])
        assert _read(s, INODE, 0, 5) == b"inode"
        assert _read(s, DATA, 0, 6) == b"synced"
        assert _read(s, other, 0, 6) in (b"cached", bytes(6))


def test_a_flush_survives_a_power_cut(tmp_path: Path) -> None:
    """After a flush, cached writes keep their bytes and a removal stays
    removed (its directory is one of obj/'s subdirectories)."""
    from powercut import PowerCutFS

    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        root = pc.mountpoint / "store"
        s = TreeStore(root)
        oids = [vid_to_data_oid(VID + k, 0) for k in range(3)]  # three subdirectories
        for oid in oids:
            s.create_and_write(oid, 4 * MiB, 0, memoryview(b"first"), sync=True)
        s.write(oids[0], MiB, memoryview(b"later"), sync=False)
        s.create_and_write(oids[1], 4 * MiB, 0, memoryview(b"again"), sync=False)
        s.remove(oids[2])
        s.flush()
        pc.crash("all")
        pc.restart()
        s = TreeStore(root)
        assert sorted(s.oids()) == oids[:2]
        assert _read(s, oids[0], 0, 5) == b"first" and _read(s, oids[0], MiB, 5) == b"later"
        assert _read(s, oids[1], 0, 5) == b"again"


def test_a_new_stores_directories_survive_a_power_cut(tmp_path: Path) -> None:
    """The 257 subdirectories made at open are durable before a creation
    relies on them."""
    from powercut import PowerCutFS

    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        root = pc.mountpoint / "store"
        TreeStore(root)
        pc.crash("all")
        pc.restart()
        assert (root / "obj" / "meta").is_dir() and (root / "obj" / "ff").is_dir()


# ---- real sheep ----


def test_dog_format_tree_and_an_unknown_store(sheep_factory: SheepFactory) -> None:
    (node,) = sheep_factory.start(1)
    out = run_dog(node, "cluster", "format", "-b", "tree", "-c", "1")
    assert out.stdout == b"using backend tree store\n"
    info = run_dog(node, "cluster", "info", "-v").stdout.decode()
    assert "Cluster store: tree with 1 redundancy policy" in info
    bad = run_dog(node, "cluster", "format", "-b", "dummy", "--force", check=False)
    assert bad.returncode == 2
    assert bad.stderr == b"Format failed: Targeted backend store is not found\n"
    assert bad.stdout == (b"using backend dummy store\nAvailable stores:\n"
                          b"---------------------------------------\ntree plain \n")


def test_a_tree_cluster_recovers_a_node_that_was_away(sheep_factory: SheepFactory) -> None:
    """Sheepdog's test 103 on our own terms: objects written while a node
    was away reach it when it is back, in its tree; what it no longer owns
    goes to obj/.stale/; every byte reads back."""
    nodes = sheep_factory.start(4)
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    run_dog(nodes[0], "cluster", "format", "-b", "tree", "-c", "3")
    wait_for(lambda: all(running(n) for n in nodes), "all nodes running")
    run_dog(nodes[0], "vdi", "create", "test", "40M")
    before = os.urandom(20 * MiB)
    run_dog(nodes[0], "vdi", "write", "test", "0", str(len(before)), input=before)
    away = nodes[3]
    away.kill9()
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    after = os.urandom(20 * MiB)
    run_dog(nodes[0], "vdi", "write", "test", str(20 * MiB), str(len(after)), input=after)
    run_dog(nodes[0], "vdi", "snapshot", "test")
    run_dog(nodes[0], "vdi", "create", "-P", "test3", "40M")
    away.start()
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes again")
    wait_for(lambda: recovered(nodes), "recovery")
    held = [tree_files(n.store) for n in nodes]
    assert all(held), "a node holds no objects"
    for files in held:
        for name, path in files.items():
            sub = path.parent.name
            assert sub == ("meta" if name[0] in "842" else name[6:8]), path
    assert any(f"{vid_to_data_oid(VID, i):016x}" in held[3] for i in range(5, 10)), \
        "the node that was away got none of the objects written meanwhile"
    # Once every node has recovered, no stale copy is left (C's cleanup).
    wait_for(lambda: not any(list((n.store / "obj" / ".stale").iterdir()) for n in nodes),
             "stale copies purged")
    assert run_dog(nodes[3], "vdi", "read", "test").stdout == before + after
    assert run_dog(nodes[0], "vdi", "read", "test3").stdout == bytes(40 * MiB)


def test_a_multi_disk_node_with_the_tree_store(sheep_factory: SheepFactory,
                                               tmp_path: Path) -> None:
    """Each disk holds its own tree (DISK/XX/, DISK/meta/, as C's
    tree store on md disks)."""
    store = tmp_path / "md"
    disks = [store / "d0", store / "d1"]
    node: SheepProcess = MdSheepProcess(store, free_port(), f"local:{tmp_path}/shm", disks)
    sheep_factory.nodes.append(node)
    node.start()
    run_dog(node, "cluster", "format", "-b", "tree", "-c", "1")
    run_dog(node, "vdi", "create", "test", "64M")
    data = os.urandom(64 * MiB)
    run_dog(node, "vdi", "write", "test", input=data)
    per_disk = [tree_files(d, "") for d in disks]
    assert all(per_disk), "an object-less disk"
    assert sum(len(f) for f in per_disk) == 16 + 1  # 16 data objects and the inode
    assert all((d / "meta").is_dir() for d in disks)
    info = run_dog(node, "node", "md", "info", "-r").stdout.decode().splitlines()
    assert [row.split()[-1] for row in info] == [str(d) for d in disks]
    used = sum(int(row.split()[3]) for row in info)  # the objects' bytes, in subdirectories too
    assert used >= len(data)
    assert run_dog(node, "vdi", "read", "test").stdout == data


@pytest.mark.parametrize("first,then", [("plain", "tree"), ("tree", "plain"), ("tree", "farm")])
def test_a_format_that_switches_backend_leaves_no_objects_behind(
        tmp_path: Path, first: str, then: str) -> None:
    """A multi-disk store switched to another backend by `cluster format
    -b` starts empty: the old layout's files (obj/<oid> or obj/XX/<oid>)
    would otherwise stay on disk unseen, and count in Sheepdog's tests'
    walks of STORE/obj."""
    from sheepblk.store import MdStore, open_store

    s = MdStore([tmp_path / "d1"], first, lambda k, p: open_store(k, str(p)))
    s.create_and_write(INODE, 4096, 0, memoryview(b"i"), sync=True)
    s.create_and_write(DATA, 4096, 0, memoryview(b"d"), sync=True)
    s.reopen(then)
    s.format()
    assert list(s.oids()) == []
    left = [p for p in (tmp_path / "d1" / "obj").rglob("*") if p.is_file()]
    assert left == []
