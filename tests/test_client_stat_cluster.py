"""SheepClient.stat_cluster grows its buffer as dog does, until the whole
epoch history fits: against a scripted sheep on a loopback socket that
answers SD_OP_STAT_CLUSTER as the daemon does (BUFFER_SMALL when an epoch
has more nodes than slots, otherwise as many of the newest epochs as fit).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sheepblk.client import SheepClient
from sheepblk.proto import (
    SD_NODE_SIZE,
    SD_REQ_SIZE,
    ClusterArgs,
    EpochLog,
    NodeId,
    Op,
    Request,
    Res,
    Response,
    SdNode,
)
from sheepblk.proto.records import EPOCH_LOG_SIZE

NR_EPOCHS = 150  # more than the client's first guess (64)
NR_NODES = 100  # more node slots than its first guess (64)


def _nodes(epoch: int) -> list[SdNode]:
    # The newest epoch has every node; older ones fewer.
    n = max(1, NR_NODES - (NR_EPOCHS - epoch))
    return [SdNode(NodeId("127.0.0.1", 7000 + i), zone=i) for i in range(n)]


def _answer(req: Request) -> tuple[int, bytes]:
    nodes_nr = ClusterArgs.unpack(req.args).nodes_nr
    stride = EPOCH_LOG_SIZE + nodes_nr * SD_NODE_SIZE
    out = bytearray()
    for epoch in range(NR_EPOCHS, max(0, NR_EPOCHS - req.data_length // stride), -1):
        nodes = _nodes(epoch)
        if len(nodes) > nodes_nr:
            return Res.BUFFER_SMALL, b""
        out += EpochLog(1, epoch, epoch, nodes).pack(nodes_slots=nodes_nr)
    return Res.SUCCESS, bytes(out)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


@pytest.fixture
def scripted_sheep() -> Iterator[tuple[int, list[int]]]:
    """A listening socket answering STAT_CLUSTER; yields (port, the
    nodes_nr of every request seen)."""
    seen: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                while True:
                    req = Request.unpack(_recv_exact(conn, SD_REQ_SIZE))
                    assert req.opcode == Op.STAT_CLUSTER
                    seen.append(ClusterArgs.unpack(req.args).nodes_nr)
                    result, data = _answer(req)
                    rsp = Response(req.opcode, result, id=req.id, data_length=len(data))
                    conn.sendall(rsp.pack() + data)
            except EOFError:
                return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port, seen
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        listener.close()
        t.join(timeout=10)
        assert not t.is_alive()


def test_stat_cluster_returns_every_epoch_with_every_node(
        scripted_sheep: tuple[int, list[int]]) -> None:
    port, seen = scripted_sheep
    with SheepClient("127.0.0.1", port, pool_size=1) as c:
        result, logs = c.stat_cluster()
    assert result == Res.SUCCESS
    assert [log.epoch for log in logs] == list(range(NR_EPOCHS, 0, -1))
    for log in logs:
        assert log.nodes == _nodes(log.epoch)
    # It asked again with more node slots after BUFFER_SMALL.
    assert seen[0] == 64 and max(seen) >= NR_NODES
