"""A Connection interrupted mid-request is closed, never lent again: its
stream is out of step, and the next request on it would read the rest of
the old answer as its own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sheepblk.client import ConnectionPool, NetworkError
from sheepblk.proto import SD_REQ_SIZE, Op, Request, Response


@pytest.fixture
def echo_sheep() -> Iterator[int]:
    """Answers every request on every connection with SUCCESS."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve_one(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    raw = conn.recv(SD_REQ_SIZE, socket.MSG_WAITALL)
                except OSError:
                    return
                if len(raw) < SD_REQ_SIZE:
                    return
                req = Request.unpack(raw)
                conn.sendall(Response(req.opcode, id=req.id).pack())

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        listener.close()
        for conn in conns:
            conn.close()
        t.join(timeout=10)


class _Interrupting:
    """A socket whose next receive is interrupted (as by Ctrl-C)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._sock, name)

    def recv_into(self, *args: object) -> int:
        raise KeyboardInterrupt

    def recvmsg_into(self, *args: object) -> int:
        raise KeyboardInterrupt


def test_interrupted_request_closes_the_connection(echo_sheep: int) -> None:
    with ConnectionPool("127.0.0.1", echo_sheep, size=1) as pool:
        conn = pool.get()
        conn.execute(Request(Op.GET_CLUSTER_DEFAULT))
        real = conn.sock
        conn.sock = _Interrupting(real)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            conn.execute(Request(Op.GET_CLUSTER_DEFAULT))
        assert conn.closed and real.fileno() == -1
        pool.put(conn)
        with pytest.raises(NetworkError):
            conn.execute(Request(Op.GET_CLUSTER_DEFAULT))
        again = pool.get()  # a new connection, not the broken one
        assert again is not conn
        rsp, _ = again.execute(Request(Op.GET_CLUSTER_DEFAULT))
        assert rsp.result == 0
        pool.put(again)
