"""Async connections from this sheep to other sheep (for *_PEER requests).

One small pool of sockets per peer; a socket carries one request at a time,
so concurrency is the number of sockets. A broken socket is dropped and the
error surfaces as NETWORK_ERROR, which the gateway may retry.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import trio

from ..proto import SD_RSP_SIZE, NodeId, Request, Res, Response

POOL_PER_PEER = 8
CONNECT_TIMEOUT = 5.0
# One request, sent and answered. A peer that stopped (SIGSTOP, a hung
# disk, a lost link the kernel has not noticed) would otherwise hold the
# socket, and the gateway's write, forever; past this the request fails
# with NETWORK_ERROR, which the gateway retries until its own deadline.
REQUEST_TIMEOUT = 30.0


class PeerError(Exception):
    result = Res.NETWORK_ERROR


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sock = stream.socket
        self.hdr = bytearray(SD_RSP_SIZE)


class PeerClient:
    """Resource handling: owns every socket it opened; aclose() frees them."""

    def __init__(self) -> None:
        self._idle: dict[NodeId, list[_Conn]] = defaultdict(list)
        self._slots: dict[NodeId, trio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def _conn(self, nid: NodeId) -> AsyncIterator[_Conn]:
        sem = self._slots.setdefault(nid, trio.Semaphore(POOL_PER_PEER))
        async with sem:
            idle = self._idle[nid]
            if idle:
                conn = idle.pop()
            else:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        stream = await trio.open_tcp_stream(nid.addr, nid.port)
                except (OSError, trio.TooSlowError) as e:
                    raise PeerError(f"cannot reach {nid}: {e}") from e
                conn = _Conn(stream)
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok:
                    idle.append(conn)
                else:
                    with trio.CancelScope(shield=True):
                        await conn.stream.aclose()

    async def request(self, nid: NodeId, req: Request, data: memoryview | None = None,
                      rbuf: memoryview | None = None) -> tuple[Response, int]:
        """Send one request; the answer's payload lands in `rbuf`. Returns
        the response and how many payload bytes arrived."""
        async with self._conn(nid) as conn:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    return await self._exchange(nid, conn, req, data, rbuf)
            except trio.TooSlowError as e:
                raise PeerError(f"{nid}: no answer in {REQUEST_TIMEOUT:.0f}s") from e

    async def _exchange(self, nid: NodeId, conn: _Conn, req: Request, data: memoryview | None,
                        rbuf: memoryview | None) -> tuple[Response, int]:
        try:
            parts = [memoryview(req.pack())]
            if data is not None and len(data):
                parts.append(data)
            while parts:
                sent = await conn.sock.sendmsg(parts)
                while parts and sent >= len(parts[0]):
                    sent -= len(parts[0])
                    parts.pop(0)
                if parts and sent:
                    parts[0] = parts[0][sent:]
            hv = memoryview(conn.hdr)
            await _recv_exact(conn.sock, hv)
            rsp = Response.unpack(hv)
            n = rsp.data_length
            if n:
                if rbuf is None or n > len(rbuf):
                    raise PeerError(f"{nid} answered {n} bytes unasked")
                await _recv_exact(conn.sock, rbuf[:n])
            return rsp, n
        except OSError as e:
            raise PeerError(f"{nid}: {e}") from e

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                await c.stream.aclose()
        self._idle.clear()


async def _recv_exact(sock: trio.socket.SocketType, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = await sock.recv_into(view[got:])
        if n == 0:
            raise PeerError("peer closed the connection")
        got += n
