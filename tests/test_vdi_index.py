"""The VDI name index: lookups by name, tag and snapshot id read no inode,
and the index follows creates, QEMU's snapshots, clones, deletes, a
restart and a joining node. Object freeing reads only the inodes that may
name the freed objects."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
from conftest import SheepFactory, SheepProcess, run_dog, wait_for
from qemu_replay import QemuDisk
from test_server_inproc import Raw, name_payload, new_vdi, read, run_node, write

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.proto import (
    Op,
    Res,
    VdiArgs,
    VdiResult,
    data_vid_offset,
    is_vdi_obj,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.proto.constants import SD_MAX_VDI_LEN
from sheepblk.server.node import Sheep

MiB = 1 << 20
OBJ = 4 * MiB


def count_inode_reads(node: Sheep) -> list[int]:
    """Every inode read the node's gateway does from now on (oids)."""
    reads: list[int] = []
    orig = node.gateway.read

    async def counting(oid: int, *a, **kw):  # type: ignore[no-untyped-def]
        if is_vdi_obj(oid):
            reads.append(oid)
        return await orig(oid, *a, **kw)

    node.gateway.read = counting  # type: ignore[method-assign]
    return reads


async def vdi_op(c: Raw, op: int, name: bytes, tag: bytes = b"", snapid: int = 0
                 ) -> tuple[int, int]:
    rsp, _ = await c.call(op, VdiArgs(snapid=snapid).pack(), name_payload(name, tag))
    return rsp.result, VdiResult.unpack(rsp.args).vdi_id


def test_lookups_read_no_inode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        res, a1 = await new_vdi(c, b"a", 16 * MiB)
        assert res == Res.SUCCESS
        data = os.urandom(4096)
        assert await write(c, vid_to_data_oid(a1, 0), data, create=True) == Res.SUCCESS
        assert await write(c, vid_to_vdi_oid(a1), a1.to_bytes(4, "little"),
                           data_vid_offset(0)) == Res.SUCCESS
        # QEMU's snapshot: the tag goes into the working inode first, then
        # NEW_VDI with snapid=1 (sd_snapshot_create).
        tag_field = b"before".ljust(SD_MAX_VDI_LEN, b"\0")
        assert await write(c, vid_to_vdi_oid(a1), tag_field, SD_MAX_VDI_LEN) == Res.SUCCESS
        res, a2 = await new_vdi(c, b"a", 16 * MiB, snapid=1, base_vdi_id=a1)
        assert res == Res.SUCCESS and a2 != a1
        res, clone = await new_vdi(c, b"c", 16 * MiB, base_vdi_id=a1)
        assert res == Res.SUCCESS
        res, other = await new_vdi(c, b"z", 16 * MiB)
        assert res == Res.SUCCESS

        reads = count_inode_reads(node)
        assert await vdi_op(c, Op.GET_VDI_INFO, b"a") == (Res.SUCCESS, a2)
        assert await vdi_op(c, Op.GET_VDI_INFO, b"a", b"before") == (Res.SUCCESS, a1)
        assert await vdi_op(c, Op.GET_VDI_INFO, b"a", snapid=1) == (Res.SUCCESS, a1)
        assert (await vdi_op(c, Op.GET_VDI_INFO, b"a", snapid=2))[0] == Res.NO_TAG
        assert await vdi_op(c, Op.GET_VDI_INFO, b"c") == (Res.SUCCESS, clone)
        assert (await vdi_op(c, Op.GET_VDI_INFO, b"nobody"))[0] == Res.NO_VDI
        assert await vdi_op(c, Op.LOCK_VDI, b"c") == (Res.SUCCESS, clone)
        assert (await new_vdi(c, b"a"))[0] == Res.VDI_EXIST
        assert reads == []

        # A tag nobody has: the index misses, the inodes are read (NO_TAG).
        assert (await vdi_op(c, Op.GET_VDI_INFO, b"a", b"nope"))[0] == Res.NO_TAG
        assert reads
        reads.clear()

        # A snapshot's inode header is read-only: its tag stays what the
        # index holds.
        assert await write(c, vid_to_vdi_oid(a1), b"x".ljust(SD_MAX_VDI_LEN, b"\0"),
                           SD_MAX_VDI_LEN) == Res.READONLY

        # Deleting reads only the deleted VDI's own inode; it is gone after.
        rsp, _ = await c.call(Op.RELEASE_VDI, VdiArgs(base_vdi_id=clone).pack())
        assert rsp.result == Res.SUCCESS
        assert await vdi_op(c, Op.DEL_VDI, b"c") == (Res.SUCCESS, clone)
        assert set(reads) == {vid_to_vdi_oid(clone)}
        reads.clear()
        assert (await vdi_op(c, Op.GET_VDI_INFO, b"c"))[0] == Res.NO_VDI
        assert reads == []

        # Deleting the snapshot: its object is still named by the working
        # VDI made from it, so it stays.
        assert await vdi_op(c, Op.DEL_VDI, b"a", b"before") == (Res.SUCCESS, a1)
        assert await read(c, vid_to_data_oid(a1, 0), 4096) == (Res.SUCCESS, data)
        assert (await vdi_op(c, Op.GET_VDI_INFO, b"a", b"before"))[0] == Res.NO_TAG
        assert await vdi_op(c, Op.GET_VDI_INFO, b"a") == (Res.SUCCESS, a2)

        # Freeing an object of the working VDI reads its own inode only,
        # not the unrelated VDI's.
        oid = vid_to_data_oid(a2, 1)
        assert await write(c, oid, data, create=True) == Res.SUCCESS
        assert await write(c, vid_to_vdi_oid(a2), a2.to_bytes(4, "little"),
                           data_vid_offset(1)) == Res.SUCCESS
        reads.clear()
        assert await write(c, vid_to_vdi_oid(a2), bytes(4), data_vid_offset(1)) == Res.SUCCESS
        assert (await read(c, oid, 4096))[0] == Res.NO_OBJ
        assert vid_to_vdi_oid(other) not in reads

    run_node(tmp_path, body)


def check_names(node: SheepProcess, vids: dict[str, int]) -> bool:
    with node.client() as c:
        assert c.lookup_vdi("S").vid == vids["S"]
        assert c.lookup_vdi("S", tag="before").vid == vids["before"]
        assert c.lookup_vdi("S", snapid=1).vid == vids["before"]
        assert c.lookup_vdi("K").vid == vids["K"]
        with pytest.raises(SheepdogError) as e:
            c.lookup_vdi("S", tag="nope")
        assert e.value.result == Res.NO_TAG
    return True


def no_vdi(c: SheepClient, name: str) -> bool:
    """True once `name` is unknown to the node behind `c`."""
    try:
        c.lookup_vdi(name)
    except SheepdogError as e:
        assert e.result == Res.NO_VDI
        return True
    return False


def test_index_follows_qemu_snapshot_clone_join_delete_restart(
        sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(2)
    with nodes[0].client() as c:
        c.make_fs(copies=2)
        c.create_vdi("S", 2 * OBJ)
    disk = QemuDisk(nodes[0].port, "S").open()
    disk.writev(0, os.urandom(OBJ))
    old = disk.vid
    new = disk.snapshot("before")
    disk.close()
    with nodes[1].client() as c:
        clone = c.create_vdi("K", 2 * OBJ, base_vid=old)
        c.create_vdi("gone", OBJ)
        c.delete_vdi("gone")
    vids = {"S": new, "before": old, "K": clone}
    # Each node applies the stream at its own pace, but a lookup waits for
    # what was ordered before it (Sheep.barrier): no waiting here.
    for n in nodes:
        check_names(n, vids)
    (late,) = sheep_factory.start(1, cluster=nodes[0].cluster)
    nodes.append(late)
    wait_for(lambda: check_names(late, vids), "the joiner's index")
    with late.client() as c:
        with pytest.raises(SheepdogError) as e:
            c.lookup_vdi("gone")
        assert e.value.result == Res.NO_VDI

    run_dog(nodes[0], "cluster", "shutdown")
    for n in nodes:
        assert n.proc is not None
        n.proc.wait(30)
    for n in nodes:
        n.start()
    for n in nodes:
        wait_for(lambda n=n: check_names(n, vids), "the index after a restart")  # type: ignore[misc]
    with nodes[2].client() as c:
        c.delete_vdi("K")
    for n in nodes:
        with n.client() as c:
            assert no_vdi(c, "K")
            assert c.lookup_vdi("S").vid == new
            assert c.lookup_vdi("S", tag="before").vid == old


def test_a_lookup_sees_what_another_node_just_did(sheep_factory: SheepFactory) -> None:
    """A client told "created" or "deleted" by one node, asking another at
    once, gets the new answer from a lookup and from the list `dog vdi
    list` reads (Sheep.barrier), not the asked node's view from before it
    read the stream that far."""
    nodes = sheep_factory.start(3)
    with nodes[0].client() as c:
        c.make_fs(copies=2)
    with nodes[1].client() as writer, nodes[2].client() as reader:
        for i in range(20):
            name = f"v{i}"
            vid = writer.create_vdi(name, OBJ)
            assert reader.lookup_vdi(name).vid == vid
            assert name in {h.name for h in reader.list_vdis()}
            writer.delete_vdi(name)
            assert no_vdi(reader, name)
            assert name not in {h.name for h in reader.list_vdis()}
