"""A pipelined connection to a sheep for trio code (sheepfs's data path).

Why: sheepfs serves FUSE requests on one trio thread. Sending each object
request through a worker thread and a blocking socket costs two thread
hand-offs, a wakeup of the trio loop and a round of GIL contention per
request, which on a 2-core machine is most of the CPU a 4 KiB read takes.
Here the request goes out from the trio thread itself, a reader task
matches the answers to their requests by id, and the requests of many
FUSE operations share one socket, which the sheep answers in batches.

The sheep's own peer requests (server/peer_client.py) go over it too.

Why raw syscalls: trio's socket methods wrap every call in two scheduler
checkpoints, each a trip through the run loop that costs more than the
syscall of a 4 KiB request. Here the non-blocking syscall is tried first
and the task waits only when the kernel cannot take or give anything yet.

Not imported by the package: nbdkit's embedded Python has no trio, so only
trio code imports this module. Error handling as PipelinedConnection's: a
broken stream (or an answer that does not arrive within `timeout`) fails
every request in flight with NetworkError and the next request opens a new
connection; a result code other than SUCCESS fails only its own request.
"""

from __future__ import annotations

import itertools
import socket

import trio

from ..proto import SD_RSP_SIZE, Flag, ObjArgs, Op, Request, Response
from ..proto.constants import SD_PROTO_VER
from .connection import (
    DEFAULT_TIMEOUT,
    Buffer,
    address_text,
    answer_view,
    call_outcome,
    free_id,
    skip_sent,
)
from .errors import NetworkError, SheepdogError

# The reader receives in chunks this large; a payload is copied out of the
# chunk, or received straight into its buffer when it did not come with it.
# 64 KiB holds a batch of 4 KiB answers; a sheep keeps a link to every
# peer, so at a hundred nodes 256 KiB chunks were 25 MB of its memory.
RECV_CHUNK = 64 << 10
# A reader whose receives keep succeeding never waits, so it lets the
# tasks it woke run after this many in a row.
RECVS_BEFORE_YIELD = 16
# A request without an answer fails between `timeout` and this many
# quarters more of it (the watcher looks every timeout / WATCH_TICKS).
WATCH_TICKS = 4


class Call:
    """A request sent on an AsyncLink whose answer is awaited with
    AsyncLink.result."""

    __slots__ = ("stream", "rbuf", "done", "rsp", "out", "error", "sent")

    def __init__(self, stream: _Stream, rbuf: memoryview | None) -> None:
        self.stream = stream
        self.sent = trio.current_time()
        self.rbuf = rbuf
        self.done = trio.Event()
        self.rsp: Response | None = None
        self.out: memoryview | None = None
        self.error: NetworkError | None = None


class _Stream:
    """One socket (non-blocking, the stdlib's) and the requests in flight on it."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.pending: dict[int, Call] = {}
        self.send_lock = trio.Lock()
        self.error: NetworkError | None = None
        self.failed = trio.Event()  # set with `error`
        self.ids = itertools.count(1)

    def fail(self, err: NetworkError) -> None:
        if self.error is None:
            self.error = err
            self.failed.set()
        calls, self.pending = list(self.pending.values()), {}
        for call in calls:
            call.error = self.error
            call.done.set()
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)  # wakes a reader waiting on it
            self.sock.close()


class AsyncLink:
    """Requests to one sheep from trio tasks, any number at once.

    Resource handling: the reader task of each connection runs in the
    nursery given; aclose() (or the nursery's end) closes the connection.
    """

    def __init__(self, host: str, port: int, nursery: trio.Nursery,
                 timeout: float = DEFAULT_TIMEOUT, connect_timeout: float | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.where = address_text(host, port)
        self._nursery = nursery
        self._stream: _Stream | None = None
        self._connecting = trio.Lock()
        self._attempts = 0  # connects tried
        self._refused: NetworkError | None = None  # why the last one failed

    async def _connect(self) -> _Stream:
        """The open stream, or a new one. Requests that waited for an
        attempt made meanwhile share its failure instead of each trying
        again in turn: behind an unreachable peer, the 16th of 16 waiting
        requests would otherwise fail after 16 connect timeouts."""
        seen = self._attempts
        async with self._connecting:
            s = self._stream
            if s is not None and s.error is None:
                return s
            if self._attempts != seen and self._refused is not None:
                raise NetworkError(str(self._refused))
            self._attempts += 1
            unix = self.host.startswith("/")
            sock = socket.socket(socket.AF_UNIX if unix else socket.AF_INET6 if ":" in self.host
                                 else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                with trio.fail_after(self.connect_timeout):
                    await trio.socket.from_stdlib_socket(sock).connect(
                        self.host if unix else (self.host, self.port))
                if not unix:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, trio.TooSlowError) as e:
                sock.close()
                self._refused = NetworkError(f"cannot connect to {self.where}: "
                                             f"{e or 'no answer'}")
                raise NetworkError(str(self._refused)) from e
            except BaseException:
                sock.close()
                raise
            self._refused = None
            s = self._stream = _Stream(sock, self.where)
            self._nursery.start_soon(self._read_loop, s)
            self._nursery.start_soon(self._watch, s)
            return s

    async def aclose(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            s.fail(NetworkError(f"connection to {self.where} is closed"))
        await trio.lowlevel.checkpoint()

    # ---- requests ----

    async def execute(self, req: Request, data: Buffer | None = None, *,
                      rbuf: Buffer | None = None, check: bool = True,
                      context: str = "") -> tuple[Response, memoryview]:
        """Send `req` (with `data` as payload) and wait for its answer,
        whose payload lands in `rbuf` when given."""
        call = await self.send(req, data, rbuf=rbuf)
        return await self.result(call, check=check, context=context)

    async def send(self, req: Request, data: Buffer | None = None, *,
                   rbuf: Buffer | None = None) -> Call:
        """Send `req` and return at once; `result` waits for the answer.
        Why two halves: a caller with several requests to make (the
        gateway writing every copy) sends them all, does its own part,
        and only then waits, without a task per request."""
        s = self._stream
        if s is None or s.error is not None:
            s = await self._connect()
        call = Call(s, memoryview(rbuf).cast("B") if rbuf is not None else None)
        rid = free_id(s.ids, s.pending)
        s.pending[rid] = call
        parts = [memoryview(req._replace(id=rid).pack())]
        if data is not None and len(data):
            parts.append(memoryview(data).cast("B"))
        await _send_request(s, rid, parts)
        return call

    async def result(self, call: Call, *, check: bool = True,
                     context: str = "") -> tuple[Response, memoryview]:
        """The answer to a request `send` sent (see execute); `_watch`
        fails it with its stream if none comes within `timeout`."""
        try:
            await call.done.wait()
        except BaseException:
            # Cancelled: the answer, when it comes, is read into a scratch
            # buffer (or, if it is being read already, into `rbuf`, which
            # the caller then no longer reads), and the stream stays in step.
            call.rbuf = None
            raise
        return call_outcome(call.error, call.rsp, call.out, check, context)

    async def _watch(self, s: _Stream) -> None:
        """Fail the stream once its oldest request waited `timeout` for an
        answer. Why one watcher and not a deadline per request: a cancel
        scope per request cost the gateway 5% of its CPU. The first
        request in `pending` (it keeps the order they were sent in) is the
        oldest; one cancelled by its caller still counts, since its answer
        not coming means the sheep stopped answering."""
        while s.error is None:
            with trio.move_on_after(self.timeout / WATCH_TICKS):
                await s.failed.wait()
            oldest = next(iter(s.pending.values()), None)
            if oldest is not None and trio.current_time() - oldest.sent > self.timeout:
                s.fail(NetworkError(f"{s.where}: no answer in {self.timeout:.0f}s"))

    async def read_obj(self, oid: int, offset: int, rbuf: memoryview) -> None:
        """READ_OBJ of len(rbuf) bytes at `offset` of `oid` into `rbuf`."""
        n = len(rbuf)
        req = Request(Op.READ_OBJ, 0, 0, 0, n, ObjArgs(oid=oid, offset=offset).pack(),
                      SD_PROTO_VER)
        _, out = await self.execute(req, rbuf=rbuf)
        if len(out) < n:  # past the object's stored end: zeros, as Vdi reads it
            rbuf[len(out):] = bytes(n - len(out))

    async def write_obj(self, oid: int, offset: int, data: Buffer, *, flags: int = 0) -> None:
        """WRITE_OBJ of `data` at `offset` of an existing object `oid`."""
        n = len(memoryview(data))
        req = Request(Op.WRITE_OBJ, flags | Flag.CMD_WRITE, 0, 0, n,
                      ObjArgs(oid=oid, offset=offset).pack(), SD_PROTO_VER)
        try:
            await self.execute(req, data)
        except SheepdogError as e:
            e.oid = oid
            raise

    # ---- the reader ----

    async def _read_loop(self, s: _Stream) -> None:
        """Deliver answers until the stream ends or fails."""
        buf = bytearray(RECV_CHUNK)
        view = memoryview(buf)
        start = end = 0
        unwaited = 0

        async def recv(into: memoryview) -> int:
            nonlocal unwaited
            while True:
                try:
                    n = s.sock.recv_into(into)
                except BlockingIOError:
                    unwaited = 0
                    await trio.lowlevel.wait_readable(s.sock)
                    continue
                unwaited += 1
                if unwaited >= RECVS_BEFORE_YIELD:
                    unwaited = 0
                    await trio.lowlevel.checkpoint()
                return n

        async def fill(want: int) -> None:
            nonlocal start, end
            while end - start < want:
                if start == end:
                    start = end = 0
                elif len(buf) - start < want:
                    buf[:end - start] = buf[start:end]
                    start, end = 0, end - start
                n = await recv(view[end:])
                if n == 0:
                    raise NetworkError(f"{s.where} closed the connection")
                end += n

        try:
            while s.error is None:
                await fill(SD_RSP_SIZE)
                rsp = Response.unpack(view[start:start + SD_RSP_SIZE])
                start += SD_RSP_SIZE
                call = s.pending.pop(rsp.id, None)
                n = rsp.data_length
                if call is None:
                    raise NetworkError(f"{s.where} answered unknown request id {rsp.id}")
                out = answer_view(n, call.rbuf)
                if n:
                    if n - (end - start) > 0 and n <= len(buf):
                        await fill(n)
                    have = min(n, end - start)
                    out[:have] = view[start:start + have]
                    start += have
                    got = have
                    while got < n:
                        k = await recv(out[got:])
                        if k == 0:
                            raise NetworkError(f"{s.where} closed the connection")
                        got += k
                call.rsp, call.out = rsp, out
                call.done.set()
                # Not kept until the next answer: an idle link would hold
                # the caller's buffer (a 512 KiB object list, per peer).
                del call, out
        except (OSError, NetworkError, trio.ClosedResourceError) as e:
            s.fail(e if isinstance(e, NetworkError) else NetworkError(f"{s.where}: {e}"))
        finally:
            if s.error is None:  # cancelled: the link is going away
                s.fail(NetworkError(f"connection to {s.where} is closed"))


async def _send_request(s: _Stream, rid: int, parts: list[memoryview]) -> None:
    """Send request `rid` whole, or fail the stream: a request cut off
    part-way (cancelled while the socket was full) would leave the sheep
    reading the next request's header as its payload. One cancelled
    before its first byte went is simply forgotten."""
    started = locked = False
    try:
        await s.send_lock.acquire()
        locked = True
        while parts and s.error is None:
            try:
                skip_sent(parts, s.sock.sendmsg(parts))
                started = True
            except BlockingIOError:
                pass
            if parts:
                await trio.lowlevel.wait_writable(s.sock)
    except trio.ClosedResourceError:
        pass  # the stream failed meanwhile; its error is the request's
    except OSError as e:
        s.fail(NetworkError(f"{s.where}: {e.strerror or e}"))  # the request's error too
    except BaseException:
        if started:
            s.fail(NetworkError(f"{s.where}: a request was cut off while being sent"))
        else:
            s.pending.pop(rid, None)
        raise
    finally:
        if locked:
            s.send_lock.release()
