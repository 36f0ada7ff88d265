"""Multi-disk nodes end to end: `sheep STORE,DISK1,DISK2` spreads objects
over the disks, `dog node md info|plug|unplug`, and a disk whose directory
vanishes is dropped while the node stays up."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MdSheepProcess, SheepProcess, free_port, run_dog

from sheepblk.store.md import MdStore

MiB = 1 << 20
NOBJ = 12


@pytest.fixture
def md_node(tmp_path: Path) -> Iterator[MdSheepProcess]:
    node = MdSheepProcess(tmp_path / "meta", free_port(), f"local:{tmp_path}/shm",
                          [tmp_path / "d1", tmp_path / "d2"])
    node.start()
    try:
        run_dog(node, "cluster", "format", "-c", "1")
        yield node
    finally:
        node.stop(timeout=15)


def _objects(disk: Path) -> set[str]:
    """The objects on a disk: Sheepdog's layout, DISK/OID."""
    return {p.name for p in disk.iterdir() if p.is_file()} if disk.exists() else set()


def _md_paths(node: SheepProcess) -> list[str]:
    rows = run_dog(node, "node", "md", "info", "-r").stdout.decode().splitlines()
    return [r.split()[-1] for r in rows]


def test_placement_matches_the_ring(tmp_path: Path) -> None:
    """Unit check: homes are stable and spread; unplug moves only what
    lived on the unplugged disk."""
    from sheepblk.store import open_store

    disks = [tmp_path / f"d{i}" for i in range(3)]
    st = MdStore(disks, "plain", lambda k, p: open_store(k, str(p)))
    oids = [0x00ABCD0000000000 | i for i in range(300)]
    homes = {oid: st.home(oid).path for oid in oids}
    assert len(set(homes.values())) == 3
    for oid in oids[:30]:
        st.create_and_write(oid, 4096, 0, memoryview(oid.to_bytes(8, "little")), sync=False)
    moved = st.unplug([disks[2]])
    assert moved == sum(1 for o in oids[:30] if homes[o] == disks[2])
    for oid in oids[:30]:
        buf = memoryview(bytearray(8))
        st.read_into(oid, 0, buf)
        assert bytes(buf) == oid.to_bytes(8, "little")
        if homes[oid] != disks[2]:
            assert st.home(oid).path == homes[oid]


def test_md_info_plug_unplug(md_node: MdSheepProcess, tmp_path: Path) -> None:
    node = md_node
    d1, d2 = node.disks
    assert _md_paths(node) == [str(d1), str(d2)]
    text = run_dog(node, "node", "md", "info").stdout.decode().splitlines()
    assert text[0] == "Id\tSize\tUsed\tAvail\tUse%\tPath"
    assert text[1].startswith(" 0\t") and text[1].endswith(str(d1))

    run_dog(node, "vdi", "create", "A", f"{NOBJ * 4}M")
    data = os.urandom(NOBJ * 4 * MiB)
    run_dog(node, "vdi", "write", "A", input=data)
    on1, on2 = _objects(d1), _objects(d2)
    assert on1 and on2 and not on1 & on2  # spread, each object once
    assert not _objects(node.store / "obj")
    # Sheepdog's md info: used is the objects' blocks, size is used + free
    rows = run_dog(node, "node", "md", "info", "-r").stdout.decode().splitlines()
    for row, disk in zip(rows, (d1, d2), strict=True):
        _, _, size, used, free, _, _ = row.split()
        blocks = sum(os.stat(disk / n).st_blocks * 512 for n in _objects(disk))
        assert int(used) == blocks and int(size) == int(used) + int(free)

    run_dog(node, "node", "md", "unplug", "-f", str(d2))
    assert _md_paths(node) == [str(d1)]
    # copied to d1; d2 keeps its files, as Sheepdog's unplug leaves them
    assert _objects(d1) == on1 | on2 and _objects(d2) == on2
    assert run_dog(node, "vdi", "read", "A").stdout == data
    # what d2 still holds is now old: rewrite the VDI while it is out
    data = os.urandom(NOBJ * 4 * MiB)
    run_dog(node, "vdi", "write", "A", input=data)

    d3 = tmp_path / "d3"  # not there yet: plug makes it, as Sheepdog's does
    run_dog(node, "node", "md", "plug", "-f", f"{d2},{d3}")
    assert _md_paths(node) == [str(d1), str(d2), str(d3)]
    assert _objects(d2) and _objects(d3)  # rebalanced onto the new disks
    # d2's old files were dropped before use: the rewritten bytes read back
    assert run_dog(node, "vdi", "read", "A").stdout == data

    bad = run_dog(node, "node", "md", "unplug", "-f", str(tmp_path / "nope"), check=False)
    assert bad.returncode != 0 and b"Failed to execute request" in bad.stderr
    # a plug that changes nothing fails, as Sheepdog's does
    again = run_dog(node, "node", "md", "plug", "-f", str(d3), check=False)
    assert again.returncode != 0 and b"Failed to execute request" in again.stderr
    assert _md_paths(node) == [str(d1), str(d2), str(d3)]


def test_md_plug_refuses_paths_it_must_not_touch(md_node: MdSheepProcess,
                                                 tmp_path: Path) -> None:
    """Paths come from the wire: each rule of sheepblk/server/md_paths.py
    refuses with INVALID_PARMS and a log line, creates nothing, and leaves
    the disks as they were; names are logged escaped."""
    from sheepblk.client import SheepdogError
    from sheepblk.proto import Op, Res

    node = md_node
    d1, d2 = node.disks
    (d1 / "sub").mkdir()
    (node.store / "obj").mkdir(exist_ok=True)
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    small = tmp_path / "small"  # a file system without room
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    relative = f"md-plug-relative-{node.port}"
    missing = tmp_path / "missing" / "deeper"
    cases: list[tuple[int, bytes, str]] = [
        (Op.MD_PLUG, relative.encode(), "not an absolute path"),
        (Op.MD_PLUG, str(missing).encode(), "not an existing directory"),
        (Op.MD_PLUG, b"/", "a system directory"),
        (Op.MD_PLUG, b"/etc", "a system directory"),
        (Op.MD_PLUG, b"/proc/self", "a system directory"),
        (Op.MD_PLUG, str(d1 / "sub").encode(), "nested with disk"),
        (Op.MD_PLUG, str(tmp_path).encode(), "nested with"),
        (Op.MD_PLUG, str(node.store / "obj").encode(), "nested with the node's store"),
        (Op.MD_PLUG, str(node.store / "epoch" / "d").encode(), "nested with the node's store"),
        (Op.MD_PLUG, str(node.store.parent).encode(), "nested with"),
        (Op.MD_PLUG, str(a_file).encode(), "not an existing directory"),
        (Op.MD_PLUG, b"/tmp/\xff\xfe-bad", "not UTF-8"),
        (Op.MD_PLUG, b"/tmp/a\nINFO forged line", "control characters in the path"),
        (Op.MD_PLUG, b"", "no path given"),
        (Op.MD_PLUG, str(small).encode(), "less than 64 MiB free"),
        (Op.MD_UNPLUG, str(tmp_path / "nope").encode(), "not a disk of this node"),
        (Op.MD_UNPLUG, f"{d1},{d2}".encode(), "cannot unplug the last disk"),
    ]
    try:
        with node.client() as c:
            for op, payload, why in cases:
                with pytest.raises(SheepdogError) as e:
                    c.request(op, data=payload + b"\0")
                assert e.value.result == Res.INVALID_PARMS, (payload, e.value)
                log = (node.store / "sheep.log").read_bytes().decode()  # never raw bytes
                assert why in log.splitlines()[-1], (payload, log[-300:])
                # a request refused is the client's error: a warning, as others
                assert log.splitlines()[-1].split()[2] == "WARNING", log[-300:]
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert not Path(relative).exists() and not missing.parent.exists()
    assert "\\nINFO forged line" in log and "\nINFO forged line" not in log
    assert _md_paths(node) == [str(d1), str(d2)]
    # a new directory of its own inside the store is fine (Sheepdog's
    # `sheep STORE,STORE/d0` layout): plug makes it
    run_dog(node, "node", "md", "plug", "-f", str(node.store / "d9"))
    assert _md_paths(node) == [str(d1), str(d2), str(node.store / "d9")]


# A single node loses the objects of the disk that vanished: errors, rightly.
@pytest.mark.expected_errors(r"disk \S+/d2 dropped \(object [0-9a-f]{16}\)",
                             r"disk \S+/d2 lost: its objects have no other copy on a single node")
def test_vanished_disk_is_dropped(md_node: MdSheepProcess) -> None:
    node = md_node
    d1, d2 = node.disks
    run_dog(node, "vdi", "create", "A", f"{NOBJ * 4}M")
    data = os.urandom(NOBJ * 4 * MiB)
    run_dog(node, "vdi", "write", "A", input=data)
    lost = {int(n[8:], 16) for n in _objects(d2) if n.startswith("00")}
    assert lost
    inode_on_d2 = any(n.startswith("80") for n in _objects(d2))
    shutil.rmtree(d2)

    # Objects that lived on d2 are lost on a single node: an error, not
    # zeros; those on d1 still read; the node stays up and drops d2.
    if not inode_on_d2:
        for idx in range(NOBJ):
            out = run_dog(node, "vdi", "read", "A", str(idx * 4 * MiB), str(4 * MiB),
                          check=False)
            if idx in lost:
                assert out.returncode != 0
            else:
                assert out.stdout == data[idx * 4 * MiB:(idx + 1) * 4 * MiB]
    else:
        assert run_dog(node, "vdi", "read", "A", check=False).returncode != 0
    assert _md_paths(node) == [str(d1)]
    run_dog(node, "node", "list")
    run_dog(node, "vdi", "create", "B", "8M")
    run_dog(node, "vdi", "write", "B", input=b"still works")
    assert run_dog(node, "vdi", "read", "B", "0", "11").stdout == b"still works"
    log = (node.store / "sheep.log").read_text()
    assert f"disk {d2} dropped" in log


def test_copy_on_write_across_disks_survives_a_power_cut(tmp_path: Path) -> None:
    """A clone's first write copies its parent's object. When the two
    objects' homes are different disks the copy goes through memory; it is
    still a copy-on-write, so its bytes must be durable before its name
    even for a cached write. Found by the power-cut model (md, seed 2): the
    name survived a cut, the copied bytes did not, and the clone read
    zeros where its parent had data."""
    from powercut import PowerCutFS

    from sheepblk.store import open_store

    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        disks = [pc.mountpoint / "d1", pc.mountpoint / "d2"]

        def md() -> MdStore:
            return MdStore(disks, "plain", lambda k, p: open_store(k, str(p)))

        st = md()
        parent = 0x00ABCD0000000001
        clone = next(0x00ABCE0000000000 | i for i in range(1000)
                     if st.home(0x00ABCE0000000000 | i) is not st.home(parent))
        body = os.urandom(1 * MiB)
        st.create_and_write(parent, 4 * MiB, 0, memoryview(body), sync=True)
        st.create_and_write(clone, 4 * MiB, 4096, memoryview(b"x" * 512),
                            cow_oid=parent, sync=False)
        pc.crash("all")
        pc.restart()
        st = md()
        got = memoryview(bytearray(1 * MiB))
        st.read_into(clone, 0, got)  # its name was durable at creation
        want = bytearray(body)
        new = bytes(got[4096:4096 + 512])
        assert new in (body[4096:4096 + 512], b"x" * 512)
        want[4096:4096 + 512] = new
        assert bytes(got) == bytes(want)


def test_a_moved_inode_stays_sparse(tmp_path: Path) -> None:
    """An unplug copies objects to their new homes; an inode (12 MiB, a few
    KiB of it used) lands as the span of its non-zero 4 KiB blocks (the
    backend's creation trims it), as Sheepdog's md_move_object, not as
    12 MiB of zeros on the new disk."""
    from sheepblk.proto import vid_to_vdi_oid
    from sheepblk.proto.inode import SD_INODE_SIZE
    from sheepblk.store import open_store

    disks = [tmp_path / f"d{i}" for i in range(2)]
    st = MdStore(disks, "plain", lambda k, p: open_store(k, str(p), flat=True))
    oid = next(vid_to_vdi_oid(v) for v in range(1, 1000)
               if st.home(vid_to_vdi_oid(v)).path == disks[1])
    head, tail = b"inode header", b"\x07\x00\x00\x00"
    st.create_and_write(oid, SD_INODE_SIZE, 0, memoryview(head), sync=False)
    st.write(oid, 4664, memoryview(tail), sync=False)
    st.unplug([disks[1]])
    moved = disks[0] / f"{oid:016x}"
    assert moved.stat().st_size == SD_INODE_SIZE
    assert moved.stat().st_blocks * 512 <= 2 * 4096  # two 4 KiB blocks, not 12 MiB
    buf = memoryview(bytearray(SD_INODE_SIZE))
    st.read_into(oid, 0, buf)
    assert bytes(buf[:len(head)]) == head and bytes(buf[4664:4668]) == tail
    assert not any(buf[len(head):4664]) and not any(buf[4668:])
