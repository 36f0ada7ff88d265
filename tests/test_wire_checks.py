"""The per-opcode table of wire checks (sheepblk/server/wire_checks.py),
walked row by row and field by field: each row's valid requests pass, each
field's broken ones are refused with that field's code; then the same
requests against a real node (in process), which refuses them before
anything changes and keeps serving."""

from __future__ import annotations

import random
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_server_inproc import Raw, new_vdi, read, run_node, write

from sheepblk.proto import (
    MAX_DATA_LENGTH,
    SD_SHEEP_PROTO_VER,
    Flag,
    NodeId,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
    data_vid_offset,
    get_objsize,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.server import wire_checks as wc
from sheepblk.server.framing import check_header
from sheepblk.server.node import Sheep
from sheepblk.server.optable import OPS

ME = SdNode(NodeId("127.0.0.1", 7000), 128, 1)
OTHER = SdNode(NodeId("127.0.0.2", 7001), 128, 2)
SEEDS = range(12)


@dataclass
class Ctx:
    """A node as the checks see it: 4 MiB data objects, except 2 GiB ones
    for the VDIs in `wide`."""

    epoch: int = 5
    me: SdNode = ME
    members: Sequence[SdNode] = (ME, OTHER)
    wide: set[int] = field(default_factory=set)

    def object_size(self, oid: int) -> int:
        if (oid >> 32) & 0xFFFFFF in self.wide:
            return get_objsize(oid, 1 << 31)
        return get_objsize(oid)


def env(seed: int) -> wc.Env:
    return wc.Env(random.Random(seed), vids=[0x123, 0xABCDEF], names=[b"alice", b"b" * 255],
                  epoch=5, member=OTHER.nid, disk="/srv/disk1")


def as_sent(req: Request, payload: bytes) -> tuple[Request, memoryview | None]:
    """What the connection hands the node: a payload only with CMD_WRITE,
    exactly data_length long; None when empty."""
    if not req.flags & Flag.CMD_WRITE or not req.data_length:
        return req, None
    return req, memoryview(payload[:req.data_length].ljust(req.data_length, b"\0"))


def cases() -> list[tuple[str, wc.Row, wc.Field, wc.Mutation]]:
    out = []
    for row in wc.ROWS:
        for f in row.fields:
            for i, bad in enumerate(f.bad):
                out.append((f"{row.opcode.name}-{f.where}-{i}", row, f, bad))
    return out


def test_every_served_opcode_has_one_row() -> None:
    served = set(OPS) | {Op.STAT_RECOVERY, Op.FORCE_RECOVER}
    assert set(wc.TABLE) == {int(op) for op in served}
    assert len(wc.ROWS) == len(wc.TABLE)


def test_every_field_is_checked_here_or_names_its_checker() -> None:
    for row in wc.ROWS:
        for f in (*row.fields, *wc.COMMON):
            assert f.bad or f.by, (row.opcode.name, f.where)
            assert f.rule


@pytest.mark.parametrize("row", wc.ROWS, ids=lambda r: r.opcode.name)
def test_valid_requests_pass(row: wc.Row) -> None:
    for seed in SEEDS:
        req, data = as_sent(*row.example(env(seed)))
        assert req.opcode == row.opcode
        assert check_header(req).result == Res.SUCCESS
        assert wc.refused(req, data, Ctx()) is None, (seed, req, data and bytes(data[:64]))


@pytest.mark.parametrize("name,row,fld,bad", cases(), ids=[c[0] for c in cases()])
def test_broken_field_is_refused_with_its_code(name: str, row: wc.Row, fld: wc.Field,
                                               bad: wc.Mutation) -> None:
    for seed in SEEDS:
        req, data = as_sent(*bad(*row.example(env(seed))))
        assert req.opcode == row.opcode
        got = wc.refused(req, data, Ctx())
        assert got is not None, (seed, req)
        assert (got.field, got.code) == (fld.where, fld.code), (seed, got)


def test_data_index_is_checked_against_the_vdis_object_size() -> None:
    """At 4 MiB objects every 32-bit index fits SD_MAX_VDI_SIZE; at 2 GiB
    ones an index of 2^23 or more is past the largest VDI."""
    ctx = Ctx(wide={0x77})
    ok = Request(Op.READ_OBJ, 0, 0, 0, 512, ObjArgs(oid=vid_to_data_oid(0x77, (1 << 23) - 1)).pack())
    assert wc.refused(ok, None, ctx) is None
    far = ok._replace(args=ObjArgs(oid=vid_to_data_oid(0x77, 1 << 23)).pack())
    assert wc.refused(far, None, ctx) == wc.R_DATA_IDX
    assert wc.refused(far, None, Ctx()) is None
    last = ok._replace(args=ObjArgs(oid=vid_to_data_oid(0x77, (1 << 32) - 1)).pack())
    assert wc.refused(last, None, Ctx()) is None


def test_common_header_fields_are_the_framings() -> None:
    ok = Request(Op.GET_VNODES, 0, 0, 0, 4, bytes(32), SD_SHEEP_PROTO_VER)
    assert check_header(ok).result == Res.SUCCESS
    assert check_header(ok._replace(proto_ver=2)).result == Res.VER_MISMATCH
    assert check_header(Request(Op.READ_OBJ, 0, 0, 0, 4, bytes(32), 3)).result == Res.VER_MISMATCH
    for ver in (0, 1, 2):  # QEMU sends 0 (or 1 in find_vdi_name)
        assert check_header(Request(Op.READ_OBJ, 0, 0, 0, 4, bytes(32), ver)).result == 0
    huge = check_header(ok._replace(data_length=MAX_DATA_LENGTH + 1))
    assert huge.result == Res.INVALID_PARMS and huge.close


def test_policies_and_shifts_dog_can_make_pass() -> None:
    from cli.dog.cluster import parse_copies

    for text in ("2:1", "4:2", "8:3", "16:15", "2:15"):
        assert wc.policy_ok(parse_copies(text)[1]), text
    assert all(wc.shift_ok(s) for s in (0, *range(20, 32)))


# ---- against a node (in process, over memory streams) ----

async def send_raw(c: Raw, req: Request, payload: bytes) -> tuple[int, bytes]:
    req, data = as_sent(req, payload)
    rid = c.next_id
    c.next_id += 1
    await c.s.send_all(req._replace(id=rid).pack() + (bytes(data) if data is not None else b""))
    rsp, out = await c.recv()
    assert rsp.id == rid
    return rsp.result, out


def stored(node: Sheep) -> dict[int, bytes]:
    """Every object of the node's store, whole."""
    out = {}
    for oid in sorted(node.store.oids()):
        buf = bytearray(get_objsize(oid))
        node.store.read_into(oid, 0, memoryview(buf))
        out[oid] = bytes(buf)
    return out


def test_a_node_refuses_every_broken_field_and_changes_nothing(tmp_path: Path) -> None:
    """Every mutation of the table, destructive opcodes included (each is
    refused before it acts), at a formatted node holding one VDI; its
    objects and the node's answers stay the same."""

    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        res, vid = await new_vdi(c, b"keep", 8 << 20)
        assert res == Res.SUCCESS
        data_oid = vid_to_data_oid(vid, 0)
        assert await write(c, data_oid, b"K" * 4096, create=True) == Res.SUCCESS
        assert await write(c, vid_to_vdi_oid(vid), struct.pack("<I", vid),
                           data_vid_offset(0)) == Res.SUCCESS
        before = stored(node)
        e = wc.Env(random.Random(1), vids=[vid], names=[b"keep"], epoch=node.epoch,
                   member=node.me.nid, disk=str(tmp_path))
        sent = 0
        for row in wc.ROWS:
            for f in row.fields:
                for bad in f.bad:
                    req, payload = bad(*row.example(e))
                    got, _ = await send_raw(c, req, payload)
                    assert got == f.code, (row.opcode.name, f.where, hex(got))
                    sent += 1
        assert sent > 150
        assert stored(node) == before
        assert await read(c, data_oid, 4096) == (Res.SUCCESS, b"K" * 4096)

    run_node(tmp_path, body)


def test_inline_io_path_refuses_as_handle_does(tmp_path: Path) -> None:
    """A small cached WRITE_OBJ / READ_OBJ is served inline when it can be
    (handle_nowait); a broken one goes to `handle`, which refuses it."""

    async def body(node: Sheep, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        _, vid = await new_vdi(c, b"fast", 8 << 20)
        oid = vid_to_data_oid(vid, 0)
        assert await write(c, oid, b"A" * 512, create=True) == Res.SUCCESS
        served_inline = []
        real = node.handle_nowait

        def spy(req: Request, data: memoryview | None, caller: object) -> object:
            got = real(req, data, caller)  # type: ignore[arg-type]
            served_inline.append(got is not None)
            return got

        node.handle_nowait = spy  # type: ignore[method-assign,assignment]
        c2 = await connect()
        ok = Request(Op.WRITE_OBJ, Flag.CMD_CACHE | Flag.CMD_WRITE, 0, 0, 512,
                     ObjArgs(oid=oid).pack())
        assert (await send_raw(c2, ok, b"B" * 512))[0] == Res.SUCCESS
        assert served_inline == [True]
        for bad in (ObjArgs(oid=oid, offset=(4 << 20) - 511),
                    ObjArgs(oid=oid | 1 << 58), ObjArgs(oid=oid, copies=99)):
            got, _ = await send_raw(c2, ok._replace(args=bad.pack()), b"C" * 512)
            assert got == Res.INVALID_PARMS
            assert served_inline[-1] is False
        rd = Request(Op.READ_OBJ, 0, 0, 0, 1024, ObjArgs(oid=oid, offset=(4 << 20) - 1000).pack())
        assert (await send_raw(c2, rd, b""))[0] == Res.INVALID_PARMS
        assert served_inline[-1] is False
        assert await read(c2, oid, 512) == (Res.SUCCESS, b"B" * 512)

    run_node(tmp_path, body)
