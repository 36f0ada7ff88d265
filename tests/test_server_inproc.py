"""The daemon's request handling driven in-process over memory streams
(no sockets): framing, bad input, pipelining, VDI semantics."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest import mock

import pytest
import trio
import trio.testing

from sheepblk.cluster.solo import SoloDriver
from sheepblk.proto import (
    SD_INODE_HEADER_SIZE,
    SD_NR_VDIS,
    SD_SHEEP_PROTO_VER,
    ClusterArgs,
    Flag,
    InodeHeader,
    ObjArgs,
    Op,
    Request,
    Res,
    Response,
    VdiArgs,
    VdiResult,
    data_vid_offset,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.server.conn import serve_stream
from sheepblk.server.context import NodeContext
from sheepblk.server.messages import ClusterMsg
from sheepblk.server.node import Options, Sheep
from sheepblk.server.optable import OPS
from sheepblk.server.transport import StreamTransport
from sheepblk.store import PlainStore

MiB = 1 << 20


class Raw:
    """A bare protocol client on one stream (pipelining allowed)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.s = stream
        self.buf = bytearray()
        self.next_id = 1

    async def send(self, opcode: int, args: bytes = bytes(32), data: bytes = b"", *,
                   flags: int = 0, length: int | None = None, proto: int | None = None) -> int:
        if data:
            flags |= Flag.CMD_WRITE
        rid = self.next_id
        self.next_id += 1
        ver = proto if proto is not None else (SD_SHEEP_PROTO_VER if opcode >= 0x80 else 2)
        req = Request(opcode, flags, 0, rid, len(data) if length is None else length, args, ver)
        await self.s.send_all(req.pack() + data)
        return rid

    async def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = await self.s.receive_some(1 << 20)
            if not chunk:
                return False
            self.buf += chunk
        return True

    async def recv(self) -> tuple[Response, bytes]:
        assert await self._need(48), "connection closed"
        rsp = Response.unpack(self.buf[:48])
        assert await self._need(48 + rsp.data_length)
        data = bytes(self.buf[48:48 + rsp.data_length])
        del self.buf[:48 + rsp.data_length]
        return rsp, data

    async def closed(self) -> bool:
        return not await self._need(1)

    async def call(self, opcode: int, args: bytes = bytes(32), data: bytes = b"",
                   **kw: int) -> tuple[Response, bytes]:
        await self.send(opcode, args, data, **kw)
        return await self.recv()


def name_payload(name: bytes, tag: bytes = b"") -> bytes:
    return name.ljust(256, b"\0") + tag.ljust(256, b"\0")


def run_node(tmp_path: Path, body: Callable[[Sheep, Callable[[], Awaitable[Raw]]], Awaitable[None]],
             *, fmt: bool = True) -> None:
    async def main() -> None:
        store = PlainStore(tmp_path / "store")
        node = Sheep(Options(store_dir=tmp_path / "store", port=7000), store, SoloDriver())
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_cluster)

            async def connect() -> Raw:
                client, server = trio.testing.memory_stream_pair()
                # An in-process client is this host, as one on the unix socket.
                nursery.start_soon(serve_stream, StreamTransport(server), node, "unix")
                return Raw(client)

            if fmt:
                c = await connect()
                rsp, _ = await c.call(Op.MAKE_FS, ClusterArgs(copies=1, ctime=1 << 32).pack(),
                                      b"plain".ljust(16, b"\0"))
                assert rsp.result == Res.SUCCESS
            with trio.fail_after(60):
                await body(node, connect)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def new_vdi(c: Raw, name: bytes, size: int = 64 * MiB, **kw: int) -> tuple[int, int]:
    rsp, _ = await c.call(Op.NEW_VDI, VdiArgs(vdi_size=size, **kw).pack(),
                          name.ljust(256, b"\0"))
    return rsp.result, VdiResult.unpack(rsp.args).vdi_id


async def write(c: Raw, oid: int, data: bytes, offset: int = 0, *, create: bool = False,
                cow: int = 0) -> int:
    op = Op.CREATE_AND_WRITE_OBJ if create else Op.WRITE_OBJ
    rsp, _ = await c.call(op, ObjArgs(oid=oid, cow_oid=cow, offset=offset).pack(), data,
                          flags=Flag.CMD_COW if cow else 0)
    return rsp.result


async def read(c: Raw, oid: int, length: int, offset: int = 0) -> tuple[int, bytes]:
    rsp, data = await c.call(Op.READ_OBJ, ObjArgs(oid=oid, offset=offset).pack(),
                             length=length)
    return rsp.result, data


def test_wait_for_format(tmp_path: Path) -> None:
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"x"))
        assert rsp.result == Res.WAIT_FOR_FORMAT
        rsp, _ = await c.call(Op.READ_OBJ, ObjArgs(oid=1).pack(), length=10)
        assert rsp.result == Res.WAIT_FOR_FORMAT
        rsp, bitmap = await c.call(Op.READ_VDIS, length=SD_NR_VDIS // 8)
        assert rsp.result == Res.SUCCESS and not any(bitmap)
        rsp, _ = await c.call(Op.STAT_CLUSTER, ClusterArgs(nodes_nr=4).pack(), length=4096)
        assert rsp.result == Res.WAIT_FOR_FORMAT

    run_node(tmp_path, body, fmt=False)


def test_vdi_lifecycle_and_objects(tmp_path: Path) -> None:
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        res, vid = await new_vdi(c, b"alice")
        assert res == Res.SUCCESS and vid
        assert (await new_vdi(c, b"alice"))[0] == Res.VDI_EXIST
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"alice"))
        assert rsp.result == Res.SUCCESS and VdiResult.unpack(rsp.args).vdi_id == vid
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"bob"))
        assert rsp.result == Res.NO_VDI
        res, head = await read(c, vid_to_vdi_oid(vid), SD_INODE_HEADER_SIZE)
        h = InodeHeader.unpack(head)
        assert (h.name, h.vdi_size, h.nr_copies, h.vdi_id) == ("alice", 64 * MiB, 1, vid)
        oid = vid_to_data_oid(vid, 0)
        assert await write(c, oid, b"x") == Res.NO_OBJ
        assert await write(c, oid, b"hello", 100, create=True) == Res.SUCCESS
        assert await read(c, oid, 10, 98) == (Res.SUCCESS, b"\0\0hello\0\0\0")
        # Any offset inside an object works; past its end does not.
        assert (await read(c, oid, 1, 4 * MiB - 1))[0] == Res.SUCCESS
        assert (await read(c, oid, 2, 4 * MiB - 1))[0] == Res.INVALID_PARMS
        assert await write(c, oid, b"zz", 4 * MiB - 1) == Res.INVALID_PARMS
        # One index entry of the 12 MiB inode.
        assert await write(c, vid_to_vdi_oid(vid), struct.pack("<I", vid),
                           data_vid_offset(0)) == Res.SUCCESS
        res, raw = await read(c, vid_to_vdi_oid(vid), 4, data_vid_offset(0))
        assert struct.unpack("<I", raw)[0] == vid
        rsp, _ = await c.call(Op.DEL_VDI, data=name_payload(b"alice"))
        assert rsp.result == Res.SUCCESS
        assert not node.store.exists(oid)
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"alice"))
        assert rsp.result == Res.NO_VDI

    run_node(tmp_path, body)


def test_snapshot_cow_and_readonly(tmp_path: Path) -> None:
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        _, base = await new_vdi(c, b"v")
        oid = vid_to_data_oid(base, 0)
        assert await write(c, oid, b"A" * 10, create=True) == Res.SUCCESS
        await write(c, vid_to_vdi_oid(base), struct.pack("<I", base), data_vid_offset(0))
        res, snap_new = await new_vdi(c, b"v", base_vdi_id=base, snapid=1)
        assert res == Res.SUCCESS and snap_new != base
        # The old id is now the snapshot: its objects and inode are read-only.
        assert await write(c, oid, b"B") == Res.READONLY
        assert await write(c, vid_to_vdi_oid(base), b"x") == Res.READONLY
        _, head = await read(c, vid_to_vdi_oid(snap_new), SD_INODE_HEADER_SIZE + 4)
        h = InodeHeader.unpack(head)
        assert h.parent_vdi_id == base and h.snap_id == 2
        assert struct.unpack_from("<I", head, SD_INODE_HEADER_SIZE)[0] == base
        _, shead = await read(c, vid_to_vdi_oid(base), SD_INODE_HEADER_SIZE)
        assert InodeHeader.unpack(shead).snap_ctime != 0
        # Copy-on-write into the new working VDI.
        new_oid = vid_to_data_oid(snap_new, 0)
        assert await write(c, new_oid, b"C", 3, create=True, cow=oid) == Res.SUCCESS
        assert await read(c, new_oid, 10) == (Res.SUCCESS, b"AAACAAAAAA")
        assert await read(c, oid, 10) == (Res.SUCCESS, b"A" * 10)
        # Lookups by snapshot id and by name.
        rsp, _ = await c.call(Op.GET_VDI_INFO, VdiArgs(snapid=1).pack(), name_payload(b"v"))
        assert VdiResult.unpack(rsp.args).vdi_id == base
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"v"))
        assert VdiResult.unpack(rsp.args).vdi_id == snap_new
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=name_payload(b"v", b"nosuchtag"))
        assert rsp.result == Res.NO_TAG
        # Clone of the snapshot under a new name.
        res, clone = await new_vdi(c, b"w", base_vdi_id=base)
        assert res == Res.SUCCESS
        # Deleting the snapshot keeps objects its children still map.
        rsp, _ = await c.call(Op.DEL_VDI, VdiArgs(snapid=1).pack(), name_payload(b"v"))
        assert rsp.result == Res.SUCCESS
        assert node.store.exists(oid)
        assert await read(c, oid, 3) == (Res.SUCCESS, b"AAA")

    run_node(tmp_path, body)


def test_locks(tmp_path: Path) -> None:
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        a, b = await connect(), await connect()
        _, vid = await new_vdi(a, b"locked")
        rsp, _ = await a.call(Op.LOCK_VDI, data=name_payload(b"locked"))
        assert rsp.result == Res.SUCCESS and VdiResult.unpack(rsp.args).vdi_id == vid
        rsp, _ = await b.call(Op.LOCK_VDI, data=name_payload(b"locked"))
        assert rsp.result == Res.VDI_LOCKED
        rsp, _ = await b.call(Op.DEL_VDI, data=name_payload(b"locked"))
        assert rsp.result == Res.VDI_LOCKED
        await a.s.aclose()  # the holder goes away: its lock goes with it
        for _ in range(100):
            rsp, _ = await b.call(Op.LOCK_VDI, data=name_payload(b"locked"))
            if rsp.result == Res.SUCCESS:
                break
            await trio.sleep(0.01)
        assert rsp.result == Res.SUCCESS
        rsp, _ = await b.call(Op.RELEASE_VDI, VdiArgs(base_vdi_id=vid).pack())
        assert rsp.result == Res.SUCCESS
        # shared locks coexist, an exclusive one does not
        c, d = await connect(), await connect()
        assert (await c.call(Op.LOCK_VDI, VdiArgs(type=1).pack(),
                             name_payload(b"locked")))[0].result == Res.SUCCESS
        assert (await d.call(Op.LOCK_VDI, VdiArgs(type=1).pack(),
                             name_payload(b"locked")))[0].result == Res.SUCCESS
        assert (await b.call(Op.LOCK_VDI, data=name_payload(b"locked")))[0].result \
            == Res.VDI_LOCKED

    run_node(tmp_path, body)


def test_pipelined_requests_answer_with_their_ids(tmp_path: Path) -> None:
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        _, vid = await new_vdi(c, b"p")
        ids = {}
        for i in range(16):
            payload = bytes([i]) * 65536
            rid = await c.send(Op.CREATE_AND_WRITE_OBJ,
                               ObjArgs(oid=vid_to_data_oid(vid, i)).pack(), payload)
            ids[rid] = i
        seen = set()
        for _ in range(16):
            rsp, _ = await c.recv()
            assert rsp.result == Res.SUCCESS
            seen.add(rsp.id)
        assert seen == set(ids)
        rids = [await c.send(Op.READ_OBJ, ObjArgs(oid=vid_to_data_oid(vid, i)).pack(),
                             length=65536) for i in range(16)]
        for _ in rids:
            rsp, data = await c.recv()
            assert data == bytes([ids[rsp.id - 16]]) * 65536

    run_node(tmp_path, body)


async def _stored(node: Sheep) -> dict[int, bytes]:
    out = {}
    for oid in node.store.oids():
        buf = memoryview(bytearray(4096))
        node.store.read_into(oid, 0, buf)
        out[oid] = bytes(buf)
    return out


def _bad_input_case(tmp_path: Path, attack: Callable[[Raw], Awaitable[None]]) -> None:
    """Run `attack` on one connection; a second client still reads its data
    and nothing stored changed."""

    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        good = await connect()
        _, vid = await new_vdi(good, b"victim")
        oid = vid_to_data_oid(vid, 0)
        await write(good, oid, b"precious", create=True)
        before = await _stored(node)
        bad = await connect()
        await attack(bad)
        await trio.sleep(0.05)
        assert await read(good, oid, 8) == (Res.SUCCESS, b"precious")
        assert await _stored(node) == before

    run_node(tmp_path, body)


def test_truncated_header_then_close(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        await c.s.send_all(Request(Op.WRITE_OBJ, data_length=10).pack()[:20])
        await c.s.aclose()

    _bad_input_case(tmp_path, attack)


def test_truncated_payload_is_not_written(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        hdr = Request(Op.WRITE_OBJ, Flag.CMD_WRITE, 0, 1, 100,
                      ObjArgs(oid=vid_to_data_oid(0x1, 0)).pack()).pack()
        await c.s.send_all(hdr + b"x" * 50)
        await c.s.aclose()

    _bad_input_case(tmp_path, attack)


def test_garbage_bytes(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        await c.s.send_all(bytes(range(256)) * 40)
        await c.s.aclose()

    _bad_input_case(tmp_path, attack)


def test_unknown_opcode_keeps_connection(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        rsp, _ = await c.call(0x7E)
        assert rsp.result == Res.INVALID_PARMS
        rsp, _ = await c.call(0x7E, data=b"payload")  # payload skipped
        assert rsp.result == Res.INVALID_PARMS
        rsp, _ = await c.call(Op.GET_CLUSTER_DEFAULT)
        assert rsp.result == Res.SUCCESS

    _bad_input_case(tmp_path, attack)


def test_huge_data_length(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        await c.send(Op.WRITE_OBJ, ObjArgs(oid=1).pack(), flags=Flag.CMD_WRITE,
                     length=0xFFFFFFFF)
        rsp, _ = await c.recv()
        assert rsp.result == Res.INVALID_PARMS
        assert await c.closed()

    _bad_input_case(tmp_path, attack)


def test_long_name(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        rsp, _ = await c.call(Op.NEW_VDI, VdiArgs(vdi_size=MiB).pack(), b"n" * 256)
        assert rsp.result == Res.INVALID_PARMS
        rsp, _ = await c.call(Op.GET_VDI_INFO, data=b"n" * 512)
        assert rsp.result == Res.INVALID_PARMS
        rsp, _ = await c.call(Op.NEW_VDI, VdiArgs(vdi_size=MiB).pack(), b"n" * 300)
        assert rsp.result == Res.INVALID_PARMS

    _bad_input_case(tmp_path, attack)


def test_offset_past_object(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        rsp, _ = await c.call(Op.READ_OBJ, ObjArgs(oid=vid_to_data_oid(1, 0),
                                                   offset=4 * MiB).pack(), length=1)
        assert rsp.result == Res.INVALID_PARMS
        rsp, _ = await c.call(Op.WRITE_OBJ, ObjArgs(oid=vid_to_data_oid(1, 0),
                                                    offset=0xFFFFFFFF).pack(), b"x")
        assert rsp.result == Res.INVALID_PARMS

    _bad_input_case(tmp_path, attack)


def test_wrong_proto_ver(tmp_path: Path) -> None:
    async def attack(c: Raw) -> None:
        rsp, _ = await c.call(Op.GET_NODE_LIST, length=80, proto=2)
        assert rsp.result == Res.VER_MISMATCH
        rsp, _ = await c.call(Op.WRITE_OBJ, ObjArgs(oid=1).pack(), b"abc", proto=9)
        assert rsp.result == Res.VER_MISMATCH
        rsp, _ = await c.call(Op.GET_NODE_LIST, length=80)
        assert rsp.result == Res.SUCCESS

    _bad_input_case(tmp_path, attack)


# The injected fault, logged as the apply that failed and as why the node left.
@pytest.mark.expected_errors(r"applying opcode 0x11 failed",
                             r"leaving the cluster: cannot apply NEW_VDI .*OSError\(5, 'injected'\)")
def test_a_node_that_cannot_apply_an_ordered_op_fails_stop(tmp_path: Path) -> None:
    """Every node applies the same stream of cluster ops; one whose apply
    fails (here: an injected fault in NEW_VDI's main half) would drift from
    the others. It leaves instead, as C Sheepdog aborts: the op answers an
    error, later requests KILLED, and the log says why."""
    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()

        async def broken(node: NodeContext, req: Request, msg: ClusterMsg) -> int:
            raise OSError(5, "injected")

        with mock.patch.dict(OPS, {Op.NEW_VDI: OPS[Op.NEW_VDI]._replace(main=broken)}):
            result, _ = await new_vdi(c, b"drift")
        assert result == Res.SYSTEM_ERROR
        assert node.failed and "NEW_VDI" in node.failed
        rsp, _ = await c.call(Op.READ_VDIS, length=SD_NR_VDIS // 8)
        assert rsp.result == Res.KILLED

    run_node(tmp_path, body)
