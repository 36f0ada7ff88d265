"""One socket carrying many requests at once, replies matched by id.

Why: a sheep answers a stream of pipelined requests in batches (one recv
for many headers, one sendmsg for many answers), as QEMU's sheepdog driver
uses it. A thread per blocking connection instead costs the sheep a wakeup,
a poll registration and a send for every single request, and on a 2-core
machine that, not the disk, bounds 4 KiB random I/O.

How the replies get home: there is no reader thread. A caller that has
sent its request and finds nobody reading becomes the reader: it receives
answers in large chunks, copies each payload into the buffer of the call it
belongs to (by the id the sheep echoes back), wakes that caller, and keeps
reading until its own answer is in. Then it hands the reading over to
another waiting caller, if any. So the thread whose answer arrives first
never sleeps at all, and no thread is woken twice for one request.

Error handling: a broken or garbled stream fails every call in flight with
the same NetworkError and closes the connection (no later answer can be
matched safely); a result code other than SUCCESS fails only its own call.
Nothing is ever written into the buffer of a call that has returned.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
from collections.abc import Callable

from ..proto import SD_RSP_SIZE, Request, Response
from .connection import (
    DEFAULT_TIMEOUT,
    Buffer,
    address_text,
    answer_view,
    call_outcome,
    free_id,
    open_socket,
    sendmsg_all,
)
from .errors import NetworkError

# Receive in chunks this large: a batch of small answers (48-byte headers
# and 4 KiB payloads) arrives in one recv. Larger payloads are received
# straight into the caller's buffer after the part that came in the chunk.
RECV_CHUNK = 256 << 10
# A payload at least this large is received into the caller's buffer
# directly rather than into the chunk and copied.
DIRECT_RECV = 64 << 10
# A request with at most this much payload is sent in one piece without
# letting go of the GIL (a 4 KiB write; copying it costs less than a hand-off).
SMALL_REQUEST = 16 << 10


class _Call:
    """One request in flight: where its answer goes and who waits for it."""

    __slots__ = ("rbuf", "rsp", "out", "error", "done", "wake", "signalled", "waiting")

    def __init__(self, rbuf: memoryview | None) -> None:
        self.rbuf = rbuf
        self.rsp: Response | None = None
        self.out: memoryview | None = None
        self.error: BaseException | None = None
        self.done = False
        # Released once to wake the caller: its answer is in, the stream
        # failed, or it should take over reading. `signalled` (under the
        # connection's state lock) keeps it from being released twice.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.signalled = False
        # Its thread sleeps on `wake` (it may be asked to take over reading).
        self.waiting = False


class PipelinedConnection:
    """A thread-safe connection to one sheep with any number of requests in
    flight. `execute` has Connection.execute's signature and meaning.

    Resource handling: owns its socket; close() frees it and fails every
    call still waiting. Error handling: see the module docstring.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7000,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.host, self.port = host, port
        self.sock = open_socket(host, port, timeout)
        self.where = address_text(host, port)
        self._ids = itertools.count(1)
        self._state = threading.Lock()  # guards everything below but the socket
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Call] = {}
        self._reading = False
        self._receiving: _Call | None = None  # whose buffer the reader may write
        self._error: NetworkError | None = None
        # The reader's chunk: [_start, _end) holds received, unparsed bytes.
        self._buf = bytearray(RECV_CHUNK)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def __enter__(self) -> PipelinedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fail(NetworkError(f"connection to {self.where} is closed"))

    # ---- the caller's side ----

    def execute(self, req: Request, data: Buffer | None = None, *,
                rbuf: Buffer | None = None, check: bool = True,
                context: str = "") -> tuple[Response, memoryview]:
        """Send `req` (with `data` as payload) and wait for its answer. The
        answer's payload lands in `rbuf` when given (a new buffer otherwise)."""
        call = _Call(memoryview(rbuf).cast("B") if rbuf is not None else None)
        with self._state:
            if self._error is not None:
                raise self._error
            rid = free_id(self._ids, self._pending)
            self._pending[rid] = call
        head = req._replace(id=rid).pack()
        try:
            self._send(head, data)
        except OSError as e:
            self._fail(self._network_error(e))
        except BaseException as e:
            # Interrupted half-way through a send: the stream is out of step.
            self._fail(NetworkError(f"{self.where}: send interrupted ({e!r})"))
            raise
        self._wait(call)
        return call_outcome(call.error, call.rsp, call.out, check, context)

    def _send(self, head: bytes, data: Buffer | None) -> None:
        """Put one request on the stream, whole, between other requests.

        A small request goes out in one non-blocking send made without
        releasing the GIL (see send_holding_gil): no other thread can run
        Python meanwhile, so none can interleave and the send lock is free,
        and the thread does not queue for the GIL again afterwards, which on
        a busy plugin costs more than the send. Whatever that send leaves
        (a full socket buffer) goes out under the send lock, as large
        requests do."""
        n = len(memoryview(data)) if data is not None else 0
        if n <= SMALL_REQUEST and _send_holding_gil is not None \
                and self._send_lock.acquire(blocking=False):
            try:
                msg = head if not n else head + bytes(data)  # type: ignore[arg-type]
                sent = _send_holding_gil(self.sock.fileno(), msg)
                if sent < len(msg):
                    self._send_all([memoryview(msg)[sent:]])
            finally:
                self._send_lock.release()
            return
        with self._send_lock:
            if n:
                assert data is not None
                self._send_all([memoryview(head), memoryview(data).cast("B")])
            else:
                self.sock.sendall(head)

    def _send_all(self, parts: list[memoryview]) -> None:
        sendmsg_all(self.sock, parts)

    def _wait(self, call: _Call) -> None:
        """Return once `call` is done, reading for everyone meanwhile if
        nobody else is."""
        while True:
            with self._state:
                if call.done:
                    return
                lead = not self._reading
                if lead:
                    self._reading = True
                else:
                    call.waiting = True
            if not lead:
                call.wake.acquire()
                with self._state:
                    call.signalled = call.waiting = False
                continue
            try:
                self._read_until(call)
            except (OSError, NetworkError) as e:
                self._fail(self._network_error(e))
            except BaseException as e:
                # Interrupted half-way through an answer: out of step.
                self._fail(NetworkError(f"{self.where}: receive interrupted ({e!r})"))
                raise
            finally:
                with self._state:
                    # A call whose buffer the reader was filling when the
                    # stream failed: _fail left it for us to wake.
                    filling, self._receiving = self._receiving, None
                    if filling is not None and filling is not call:
                        self._signal(filling)
                    self._reading = False
                    # Hand the reading over to a caller asleep waiting; one
                    # still sending becomes the reader when it gets here.
                    for other in self._pending.values():
                        if other.waiting:
                            self._signal(other)
                            break
                if self._error is not None:
                    self.sock.close()
            return

    def _network_error(self, e: OSError | NetworkError) -> NetworkError:
        if isinstance(e, NetworkError):
            return e
        return NetworkError(f"{self.where}: {e.strerror or e}")

    def _signal(self, call: _Call) -> None:
        """Wake `call`'s thread; the state lock is held."""
        if not call.signalled:
            call.signalled = True
            call.wake.release()

    # ---- the reader's side ----

    def _buffer(self, want: int) -> None:
        """Receive until `want` unparsed bytes (at most the chunk's size)
        are in the chunk, moving them to its start first if they would not
        fit after it."""
        while self._end - self._start < want:
            if self._start == self._end:
                self._start = self._end = 0
            elif len(self._buf) - self._start < want:
                n = self._end - self._start
                self._buf[:n] = self._buf[self._start:self._end]
                self._start, self._end = 0, n
            n = self.sock.recv_into(self._view[self._end:])
            if n == 0:
                raise NetworkError(f"{self.where} closed the connection")
            self._end += n

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise NetworkError(f"{self.where} closed the connection")
            got += n

    def _read_until(self, mine: _Call) -> None:
        """Receive answers, delivering each, until `mine` is done."""
        while not mine.done:
            self._buffer(SD_RSP_SIZE)
            rsp = Response.unpack(self._view[self._start:self._start + SD_RSP_SIZE])
            self._start += SD_RSP_SIZE
            with self._state:
                call = self._pending.get(rsp.id)
                # From here its buffer may be written: a failure meanwhile
                # must not wake its caller until the reader is done with it.
                self._receiving = call
            if call is None:
                raise NetworkError(f"{self.where} answered unknown request id "
                                   f"{rsp.id}")
            n = rsp.data_length
            out = answer_view(n, call.rbuf)
            if n:
                have = min(n, self._end - self._start)
                if have < n and n - have < DIRECT_RECV and n <= len(self._buf):
                    self._buffer(n)
                    have = n
                out[:have] = self._view[self._start:self._start + have]
                self._start += have
                if have < n:
                    self._recv_exact(out[have:])
            with self._state:
                self._receiving = None
                self._pending.pop(rsp.id, None)
                if call.error is None:  # else _fail ended it meanwhile
                    call.rsp, call.out = rsp, out
                    call.done = True
                if call is not mine:
                    self._signal(call)

    def _fail(self, err: NetworkError) -> None:
        """Fail every call in flight and close: the stream is unusable."""
        with self._state:
            if self._error is None:
                self._error = err
            calls = list(self._pending.values())
            self._pending.clear()
            for call in calls:
                call.error = self._error
                call.done = True
                if call is not self._receiving:  # the reader wakes that one
                    self._signal(call)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if not self._reading:
            self.sock.close()


def _libc_send() -> Callable[[int, bytes], int] | None:
    """libc's send(2) called through ctypes.PyDLL, which, unlike CDLL and
    the socket module, keeps the GIL across the call: right for a
    non-blocking send of a few KiB, never for anything that may wait.
    Returns how many bytes went (0 when the socket buffer is full); raises
    OSError for a broken connection. None where ctypes is unavailable."""
    try:
        import ctypes
        libc = ctypes.PyDLL(None, use_errno=True)
        fn = libc.send
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_ssize_t
    flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL

    def send(fd: int, msg: bytes) -> int:
        n = fn(fd, msg, len(msg), flags)
        if n >= 0:
            return int(n)
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return 0
        raise OSError(err, os.strerror(err))

    return send


_send_holding_gil = _libc_send()
