"""Wire layouts pinned to known values: if one of these changes, QEMU and
Sheepdog's dog stop understanding us."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from sheepblk.proto import (
    SD_INODE_HEADER_SIZE,
    SD_INODE_SIZE,
    SD_NODE_SIZE,
    ClusterArgs,
    ClusterInfo,
    ForwArgs,
    InodeHeader,
    NodeId,
    ObjArgs,
    Op,
    Request,
    Response,
    SdNode,
    VdiArgs,
    VdiResult,
    data_vid_offset,
    sd_hash_vdi,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.proto.fnv import fnv_64a_buf
from sheepblk.proto.records import EPOCH_LOG_SIZE, EpochLog
from sheepblk.server.framing import RequestDecoder, check_header


def test_header_sizes_and_offsets() -> None:
    req = Request(Op.READ_OBJ, flags=0x1234, epoch=7, id=0xAABBCCDD, data_length=4096,
                  args=ObjArgs(oid=0x8000000100000000, cow_oid=5, copies=3,
                               offset=0x10000).pack())
    raw = req.pack()
    assert len(raw) == 48
    assert raw[0] == 0x02 and raw[1] == 0x02
    assert struct.unpack_from("<HIII", raw, 2) == (0x1234, 7, 0xAABBCCDD, 4096)
    assert struct.unpack_from("<QQB", raw, 16) == (0x8000000100000000, 5, 3)
    assert struct.unpack_from("<I", raw, 40)[0] == 0x10000  # obj.offset
    rsp = Response(Op.READ_OBJ, result=0x16, id=9, data_length=3,
                   args=VdiResult(vdi_id=0xABCDEF, copies=2).pack()).pack()
    assert len(rsp) == 48
    assert struct.unpack_from("<I", rsp, 16)[0] == 0x16  # result
    assert struct.unpack_from("<I", rsp, 24)[0] == 0xABCDEF  # vdi.vdi_id
    assert rsp[32] == 2  # vdi.copies
    v = VdiArgs(vdi_size=1 << 30, base_vdi_id=0x12, copies=3, snapid=1, type=1).pack()
    assert struct.unpack_from("<QIB", v, 0) == (1 << 30, 0x12, 3)
    assert struct.unpack_from("<II", v, 16) == (1, 1)  # snapid, type
    c = ClusterArgs(ctime=99, copies=2, nodes_nr=64, block_size_shift=22).pack()
    assert struct.unpack_from("<Q", c, 8)[0] == 99 and c[16] == 2
    assert struct.unpack_from("<I", c, 24)[0] == 64 and c[28] == 22


def test_fnv_and_vdi_ids() -> None:
    # FNV-1a 64 reference vectors (Fowler/Noll/Vo test suite).
    assert fnv_64a_buf(b"") == 0xCBF29CE484222325
    assert fnv_64a_buf(b"a") == 0xAF63DC4C8601EC8C
    assert fnv_64a_buf(b"foobar") == 0x85944171F73967E8
    assert sd_hash_vdi("a") == 0x01EC8C
    assert sd_hash_vdi("foobar") == 0x3967E8
    assert sd_hash_vdi(b"alice") == fnv_64a_buf(b"alice") & 0xFFFFFF


def test_inode_layout() -> None:
    assert SD_INODE_HEADER_SIZE == 4664
    assert data_vid_offset(0) == 4664
    assert data_vid_offset(10) == 4704
    assert SD_INODE_SIZE == 4664 + 4 * (1 << 20) + 8 * (1 << 20)
    h = InodeHeader(name="v", tag="t", create_time=1, snap_ctime=2, vdi_size=3,
                    nr_copies=4, block_size_shift=22, snap_id=5, vdi_id=6, parent_vdi_id=7)
    raw = h.pack()
    assert raw[:1] == b"v" and raw[256:257] == b"t"
    assert struct.unpack_from("<QQQQ", raw, 512) == (1, 2, 0, 3)  # ctime, snap_ctime, clock, size
    assert raw[552] == 0 and raw[554] == 4 and raw[555] == 22  # policy, copies, shift
    assert struct.unpack_from("<III", raw, 556) == (5, 6, 7)
    assert vid_to_vdi_oid(0xABCDEF) == 0x80ABCDEF00000000
    assert vid_to_data_oid(0xABCDEF, 3) == 0x00ABCDEF00000003


def test_node_and_epoch_layout() -> None:
    assert SD_NODE_SIZE == 80
    assert EPOCH_LOG_SIZE == 48
    n = SdNode(NodeId("127.0.0.1", 7000), 128, 5, 1 << 30)
    raw = n.pack()
    assert raw[24 + 12:24 + 16] == bytes([127, 0, 0, 1])
    assert struct.unpack_from("<H", raw, 40)[0] == 7000
    log = EpochLog(1, 2, 3, [n], nr_copies=2, drv_name="plain")
    packed = log.pack(nodes_slots=4)
    assert len(packed) == 48 + 4 * 80
    assert EpochLog.unpack(packed).nodes == [n]


def test_forw_layout() -> None:
    """sd_req.forw (REPAIR_REPLICA): oid, addr[16], port in the 32 bytes."""
    src = NodeId("10.0.0.2", 7001)
    raw = ForwArgs(0x00ABCDEF00000003, src).pack()
    assert len(raw) == 32
    assert struct.unpack_from("<Q", raw, 0)[0] == 0x00ABCDEF00000003
    assert raw[8:24] == bytes(12) + bytes([10, 0, 0, 2])
    assert struct.unpack_from("<H", raw, 24)[0] == 7001 and raw[26:] == bytes(6)
    assert ForwArgs.unpack(raw) == (0x00ABCDEF00000003, src)
    v6 = NodeId("fe80::1", 7000)
    assert ForwArgs.unpack(ForwArgs(1, v6).pack()).src == v6


def test_cluster_info_layout() -> None:
    """struct cluster_info (CLUSTER_INFO) as gcc lays it out: nodes at 48."""
    nodes = [SdNode(NodeId("127.0.0.1", 7000 + i), 128, i, 1 << 30) for i in range(3)]
    info = ClusterInfo(epoch=9, ctime=5 << 32, flags=0x8, nr_copies=3, copy_policy=0x42,
                       status=1, block_size_shift=22, store="farm", nodes=nodes)
    raw = info.pack()
    assert len(raw) == 48 + 3 * SD_NODE_SIZE
    assert raw[0] == 0x0A and raw[1] == 0  # SD_SHEEP_PROTO_VER, disable_recovery
    assert struct.unpack_from("<hIQH", raw, 2) == (3, 9, 5 << 32, 0x8)
    assert tuple(raw[18:22]) == (3, 0x42, 1, 22)
    assert raw[22:25] == bytes(3) and raw[25:41] == b"farm".ljust(16, b"\0")
    assert raw[41:48] == bytes(7) and raw[48:48 + SD_NODE_SIZE] == nodes[0].pack()
    assert ClusterInfo.unpack(raw) == info
    cut = ClusterInfo.unpack(raw[:48 + SD_NODE_SIZE + 10])  # a short data_length
    assert cut.nodes == nodes[:1] and cut.store == "farm"


@given(st.binary(min_size=48, max_size=48))
def test_random_headers_decode_safely(raw: bytes) -> None:
    """Any 48 bytes decode to a header whose verdict is well defined and
    never asks to buffer more than the limit."""
    dec = RequestDecoder()
    dec.feed(raw)
    req = dec.next_header()
    assert req is not None
    assert req.pack() == raw
    verdict = check_header(req)
    assert 0 <= verdict.payload <= 64 << 20
    assert dec.next_header() is None


@given(st.lists(st.binary(min_size=1, max_size=200), max_size=20))
def test_decoder_handles_any_chunking(chunks: list[bytes]) -> None:
    stream = b"".join(chunks)
    dec = RequestDecoder(capacity=4096)
    headers = []
    for c in chunks:
        dec.feed(c)
        while (h := dec.next_header()) is not None:
            headers.append(h.pack())
    assert b"".join(headers) == stream[:len(headers) * 48]
    assert dec.buffered == len(stream) - 48 * len(headers)
