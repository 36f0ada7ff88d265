"""Peer I/O a sheep answers inline (peer_ops.serve_now): small READ_PEER
and cached WRITE_PEER requests of the node's epoch, many on one
connection as a gateway's pipelined link sends them, each answered under
its own id with its own bytes; one stamped with an older epoch is still
refused (OLD_NODE_VER) and changes nothing, as the handler would."""

from __future__ import annotations

import os
import socket

from conftest import SheepFactory, wait_for
from test_cluster_daemon import epoch_of, recovered, three

from sheepblk.proto import (
    SD_RSP_SIZE,
    SD_SHEEP_PROTO_VER,
    Flag,
    ObjArgs,
    Op,
    Request,
    Res,
    Response,
    vid_to_data_oid,
)

KIB = 1024
OID = vid_to_data_oid(0x00ABCD, 3)
N = 32


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "the sheep hung up"
        buf += chunk
    return bytes(buf)


def _answers(sock: socket.socket, n: int) -> dict[int, tuple[Response, bytes]]:
    out = {}
    for _ in range(n):
        rsp = Response.unpack(_recv_exact(sock, SD_RSP_SIZE))
        out[rsp.id] = (rsp, _recv_exact(sock, rsp.data_length))
    return out


def _req(opcode: int, epoch: int, rid: int, offset: int, data: bytes = b"",
         length: int = 0) -> bytes:
    flags = Flag.CMD_WRITE | Flag.CMD_CACHE if data else 0
    return Request(opcode, flags, epoch, rid, len(data) or length,
                   ObjArgs(oid=OID, offset=offset).pack(), SD_SHEEP_PROTO_VER).pack() + data


def test_pipelined_peer_io_is_answered_by_id(sheep_factory: SheepFactory) -> None:
    a, b = three(sheep_factory, n=2, copies=1)
    c = sheep_factory.start(1, cluster=f"local:{sheep_factory.tmp}/shm-0")[0]
    wait_for(lambda: epoch_of(a) == 2 and recovered([a, b, c]), "the join to settle")
    slots = {i: os.urandom(4 * KIB) for i in range(N)}
    with socket.create_connection(("127.0.0.1", a.port)) as s:
        s.sendall(Request(Op.CREATE_AND_WRITE_PEER, Flag.CMD_WRITE, 2, 1, 4 * KIB,
                          ObjArgs(oid=OID).pack(), SD_SHEEP_PROTO_VER).pack() + bytes(4 * KIB))
        assert _answers(s, 1)[1][0].result == Res.SUCCESS
        # Every write in one burst, then every read in one burst.
        s.sendall(b"".join(_req(Op.WRITE_PEER, 2, 100 + i, i * 8 * KIB, data)
                           for i, data in slots.items()))
        wrote = _answers(s, N)
        assert sorted(wrote) == [100 + i for i in range(N)]
        assert all(rsp.result == Res.SUCCESS for rsp, _ in wrote.values())
        s.sendall(b"".join(_req(Op.READ_PEER, 2, 200 + i, i * 8 * KIB, length=4 * KIB)
                           for i in range(N)))
        read = _answers(s, N)
        for i, data in slots.items():
            rsp, got = read[200 + i]
            assert rsp.result == Res.SUCCESS and got == data, i
        # A gateway still at epoch 1 is refused, and its write goes nowhere.
        s.sendall(_req(Op.WRITE_PEER, 1, 300, 0, b"\xee" * 4 * KIB)
                  + _req(Op.READ_PEER, 2, 301, 0, length=4 * KIB))
        late = _answers(s, 2)
        assert late[300][0].result == Res.OLD_NODE_VER
        assert late[301][1] == slots[0]
