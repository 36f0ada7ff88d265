"""One client connection: read pipelined requests, serve them concurrently,
answer each (with its id) under a send lock.

Resource handling: a request's payload buffer is allocated once at its
exact size and received into in place; in-flight requests per connection
are capped so a client cannot make us hold unbounded buffers.
Error handling: a malformed stream gets an error answer where possible,
then the connection closes; nothing stored changes.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from ..proto import Request, Res
from .buffers import BufferPool
from .framing import ProtocolError, RequestDecoder, check_header, response_header
from .reply import Caller, Reply
from .transport import Transport

log = logging.getLogger("sheep.conn")

# Requests one connection may have in flight (QEMU pipelines up to ~1024
# AIO requests; beyond this we simply stop reading until some finish).
MAX_INFLIGHT = 64
# How long a closing connection may spend releasing its client's locks.
CLOSE_GRACE = 2.0
# Scratch for skipping the payload of a refused request.
_SKIP_CHUNK = 1 << 16


class Handler(Protocol):
    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply: ...

    def new_caller(self, peer: str) -> Caller: ...

    async def connection_closed(self, caller: Caller) -> None: ...

    @property
    def epoch(self) -> int: ...


class Connection:
    def __init__(self, transport: Transport, handler: Handler, peer: str = "") -> None:
        self.t = transport
        self.handler = handler
        self.caller = handler.new_caller(peer)
        self.decoder = RequestDecoder()
        self.send_lock = trio.Lock()
        self.slots = trio.Semaphore(MAX_INFLIGHT)
        self.broken = False
        self.buffers: BufferPool | None = getattr(handler, "buffers", None)

    async def _fill(self) -> bool:
        space = self.decoder.recv_buffer()
        n = await self.t.recv_into(space)
        if n == 0:
            return False
        self.decoder.commit(n)
        return True

    async def _recv_payload(self, buf: memoryview) -> bool:
        got = self.decoder.take_into(buf)
        if got < len(buf):
            return await self.t.recv_exact(buf[got:])
        return True

    async def _skip(self, n: int) -> bool:
        n -= self.decoder.skip(n)
        scratch = memoryview(bytearray(min(n, _SKIP_CHUNK)))
        while n > 0:
            k = await self.t.recv_into(scratch[:min(n, len(scratch))])
            if k == 0:
                return False
            n -= k
        return True

    async def send(self, req: Request, reply: Reply) -> None:
        try:
            await self._send(req, reply)
        finally:
            if reply.pooled is not None and self.buffers is not None:
                self.buffers.put(reply.pooled)

    async def _send(self, req: Request, reply: Reply) -> None:
        data = reply.data
        n = len(data) if data is not None else 0
        hdr = response_header(req, reply.result, args=reply.args, data_length=n,
                              epoch=self.handler.epoch)
        parts = [memoryview(hdr)]
        if n:
            assert data is not None
            parts.append(memoryview(data).cast("B"))
        async with self.send_lock:
            if self.broken:
                return
            try:
                await self.t.send_all(parts)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.broken = True

    async def _serve_one(self, req: Request, data: memoryview | None,
                         pooled: bytearray | None) -> None:
        try:
            try:
                reply = await self.handler.handle(req, data, self.caller)
            except Exception:
                log.exception("request %#x failed", req.opcode)
                reply = Reply(Res.SYSTEM_ERROR)
            await self.send(req, reply)
        finally:
            self.slots.release()
            if pooled is not None and self.buffers is not None:
                self.buffers.put(pooled)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await self._read_loop(nursery)
        finally:
            # Shielded so a cancelled connection still releases its locks,
            # bounded so a stopping node does not wait on a dead stream.
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                await self.handler.connection_closed(self.caller)
                try:
                    await self.t.aclose()
                except Exception:  # noqa: BLE001 - already broken
                    pass

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while not self.broken:
            req = self.decoder.next_header()
            if req is None:
                try:
                    if not await self._fill():
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                continue
            verdict = check_header(req)
            if verdict.result != Res.SUCCESS:
                log.warning("refusing request %#x from %s: result %#x", req.opcode,
                            self.caller.peer, verdict.result)
                await self.send(req, Reply(verdict.result))
                if verdict.close or not await self._skip(verdict.payload):
                    return
                continue
            data = None
            pooled = None
            if verdict.payload:
                pooled = self._get_buffer(verdict.payload)
                buf = memoryview(pooled)
                try:
                    if not await self._recv_payload(buf):
                        return  # closed mid-payload: never act on half a write
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                data = buf
            await self.slots.acquire()
            nursery.start_soon(self._serve_one, req, data, pooled)

    def _get_buffer(self, n: int) -> bytearray:
        return self.buffers.get(n) if self.buffers is not None else bytearray(n)


async def serve_stream(transport: Transport, handler: Handler, peer: str = "") -> None:
    try:
        await Connection(transport, handler, peer).run()
    except ProtocolError as e:
        log.warning("closing %s: %s", peer, e)
