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
import os
from time import perf_counter
from typing import Protocol

import trio

from ..proto import Request, Res
from .buffers import BufferPool, PayloadBuffer
from .framing import ProtocolError, RequestDecoder, check_header, response_header
from .logs import REQUEST
from .reply import Caller, FileSpan, Reply
from .stats import RequestStats
from .transport import Transport

log = logging.getLogger("sheep.conn")

# Requests one connection may have in flight (QEMU pipelines up to ~1024
# AIO requests; beyond this we simply stop reading until some finish).
MAX_INFLIGHT = 64
# How long a closing connection may spend releasing its client's locks.
CLOSE_GRACE = 2.0
# Scratch for skipping the payload of a refused request.
_SKIP_CHUNK = 1 << 16
# Answers served inline are gathered into one sendmsg up to this many bytes.
BATCH_BYTES = 256 << 10
# Inline requests the read loop may serve without yielding to other tasks
# (a client that keeps the socket full must not starve the others).
INLINE_BEFORE_YIELD = 32
# Zeros for the part of a file-backed answer past the file's end.
_ZEROS = memoryview(bytes(1 << 20))


class Handler(Protocol):
    async def handle(self, req: Request, data: memoryview | None, caller: Caller) -> Reply: ...

    def new_caller(self, peer: str) -> Caller: ...

    async def connection_closed(self, caller: Caller) -> None: ...

    # Optional: handle_nowait(req, data, caller) -> Reply | None answers a
    # request at once when it can do so without waiting for anything, or
    # returns None, having changed nothing, for `handle` to serve it.

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
        self.nowait = getattr(handler, "handle_nowait", None)
        # The handler's request counters (stats.py), if it keeps any.
        self.stats: RequestStats | None = getattr(handler, "stats", None)
        # Inline answers not sent yet: header/payload parts, pooled buffers.
        self._out: list[memoryview] = []
        self._out_bytes = 0
        self._out_pooled: list[PayloadBuffer] = []
        self._since_yield = 0

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
            if reply.file is not None:
                await self._send_file(req, reply, reply.file)
            else:
                await self._send_parts(self._parts(req, reply))
        finally:
            if reply.pooled is not None and self.buffers is not None:
                self.buffers.put(reply.pooled)
            if reply.file is not None:
                os.close(reply.file.fd)

    def _parts(self, req: Request, reply: Reply) -> list[memoryview]:
        data = reply.data
        n = len(data) if data is not None else 0
        hdr = response_header(req, reply.result, args=reply.args, data_length=n,
                              epoch=self.handler.epoch)
        if not n:
            return [memoryview(hdr)]
        assert data is not None
        return [memoryview(hdr), memoryview(data).cast("B")]

    async def _lock(self) -> None:
        try:
            self.send_lock.acquire_nowait()  # uncontended: no trip through the scheduler
        except trio.WouldBlock:
            await self.send_lock.acquire()

    async def _send_parts(self, parts: list[memoryview]) -> None:
        await self._lock()
        try:
            if self.broken:
                return
            try:
                await self.t.send_all(parts)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.broken = True
        finally:
            self.send_lock.release()

    async def _send_file(self, req: Request, reply: Reply, span: FileSpan) -> None:
        hdr = response_header(req, reply.result, args=reply.args, data_length=span.length,
                              epoch=self.handler.epoch)
        await self._lock()
        try:
            if self.broken:
                return
            try:
                await self.t.send_all([memoryview(hdr)])
                rest = span.length - await self.t.sendfile(span.fd, span.offset, span.count)
                while rest > 0:  # past the file's end, or it shrank meanwhile
                    n = min(rest, len(_ZEROS))
                    await self.t.send_all([_ZEROS[:n]])
                    rest -= n
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.broken = True
        finally:
            self.send_lock.release()

    def _queue(self, req: Request, reply: Reply) -> None:
        """Keep an inline answer for the next _flush (one sendmsg for all)."""
        parts = self._parts(req, reply)
        self._out.extend(parts)
        self._out_bytes += sum(len(p) for p in parts)
        if reply.pooled is not None:
            self._out_pooled.append(reply.pooled)

    async def _flush(self) -> None:
        if not self._out:
            return
        parts, pooled = self._out, self._out_pooled
        self._out, self._out_pooled, self._out_bytes = [], [], 0
        try:
            await self._send_parts(parts)
        finally:
            if self.buffers is not None:
                for buf in pooled:
                    self.buffers.put(buf)

    def _serve_now(self, req: Request, data: memoryview | None) -> bool:
        """Answer `req` inline if the handler can without waiting."""
        assert self.nowait is not None
        start = perf_counter()
        token = REQUEST.set((self.caller.key, req.id))
        try:
            reply = self.nowait(req, data, self.caller)
        except Exception:
            log.exception("request %#x failed", req.opcode)
            reply = Reply(Res.SYSTEM_ERROR)
        finally:
            REQUEST.reset(token)
        if reply is None:
            return False
        self._queue(req, reply)
        if self.stats is not None:
            self.stats.record(req.opcode, reply.result, perf_counter() - start,
                              len(data) if data is not None else 0, _out_bytes(reply))
        return True

    async def _serve_one(self, req: Request, data: memoryview | None,
                         pooled: PayloadBuffer | None) -> None:
        stats = self.stats
        start = perf_counter()
        REQUEST.set((self.caller.key, req.id))  # this task's own context
        if stats is not None:
            stats.begin(req.opcode)
        try:
            try:
                reply = await self.handler.handle(req, data, self.caller)
            except Exception:
                log.exception("request %#x failed", req.opcode)
                reply = Reply(Res.SYSTEM_ERROR)
            n_out = _out_bytes(reply)
            await self.send(req, reply)
            if stats is not None:
                stats.record(req.opcode, reply.result, perf_counter() - start,
                             len(data) if data is not None else 0, n_out)
        finally:
            if stats is not None:
                stats.end(req.opcode)
            self.slots.release()
            if pooled is not None and self.buffers is not None:
                self.buffers.put(pooled)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._read_loop(nursery)
                finally:
                    self.caller.closed = True
                    with trio.CancelScope(shield=True):
                        await self._flush()
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
                # Nothing more parsed: answer what was served inline
                # before possibly waiting for the client.
                await self._flush()
                if self._since_yield >= INLINE_BEFORE_YIELD:
                    self._since_yield = 0
                    await trio.lowlevel.checkpoint()
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
                await self._flush()
                try:
                    await self.send(req, Reply(verdict.result))
                    if verdict.close or not await self._skip(verdict.payload):
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                continue
            data = None
            pooled = None
            if verdict.payload:
                if self.decoder.buffered < verdict.payload:
                    await self._flush()
                pooled = self._get_buffer(verdict.payload)
                buf = memoryview(pooled)
                try:
                    if not await self._recv_payload(buf):
                        return  # closed mid-payload: never act on half a write
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                data = buf
            if self.nowait is not None and self._serve_now(req, data):
                if pooled is not None and self.buffers is not None:
                    self.buffers.put(pooled)
                self._since_yield += 1
                if self._out_bytes >= BATCH_BYTES:
                    await self._flush()
                continue
            await self._flush()
            self._since_yield = 0
            await self.slots.acquire()
            nursery.start_soon(self._serve_one, req, data, pooled)

    def _get_buffer(self, n: int) -> PayloadBuffer:
        return self.buffers.get(n) if self.buffers is not None else bytearray(n)


def _out_bytes(reply: Reply) -> int:
    """The payload bytes an answer carries."""
    if reply.file is not None:
        return reply.file.length
    data = reply.data
    if data is None:
        return 0
    return data.nbytes if isinstance(data, memoryview) else len(data)


async def serve_stream(transport: Transport, handler: Handler, peer: str = "") -> None:
    """Serve one connection until it ends. Whatever goes wrong with it, a
    reset mid-payload or a bug, ends that connection alone: the listener's
    nursery would otherwise take the whole daemon down with it."""
    try:
        await Connection(transport, handler, peer).run()
    except ProtocolError as e:
        log.warning("closing %s: %s", peer, e)
    except Exception as e:  # noqa: BLE001 - the connection ends, the daemon goes on
        if _only_lost_link(e):
            log.info("connection from %s lost: %s", peer, e)
        else:
            log.error("connection from %s failed", peer, exc_info=e)


_LOST_LINK = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _only_lost_link(e: BaseException) -> bool:
    """Whether `e` (or every exception in its group) is the link going away."""
    if isinstance(e, BaseExceptionGroup):
        return e.subgroup(lambda x: not isinstance(x, (*_LOST_LINK, BaseExceptionGroup))) is None
    return isinstance(e, _LOST_LINK)
