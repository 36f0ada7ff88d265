"""The request stream as a state machine with no I/O (hypercorn style).

A connection reads the socket in large chunks straight into the decoder's
buffer (`recv_buffer` / `commit`), then pulls whole headers out of it. A
payload is moved out of the buffer only for the few bytes that arrived with
the headers (`take_into`); the rest is received by the caller directly into
the request's own buffer, so a 4 MiB write is never assembled by copying.
"""

from __future__ import annotations

from typing import NamedTuple

from ..proto import (
    MAX_DATA_LENGTH,
    SD_PROTO_VER,
    SD_REQ_SIZE,
    SD_SHEEP_PROTO_VER,
    Flag,
    Request,
    Res,
    Response,
)

# Big enough to hold over a thousand pipelined headers from one read, small
# enough that the payload bytes copied out of it per request stay small.
RECV_CHUNK = 64 * 1024
_ZERO28 = bytes(28)


class ProtocolError(Exception):
    """The stream cannot be parsed further; the connection must close."""


class Verdict(NamedTuple):
    """What to do with a decoded header before reading its payload.

    `result` is SUCCESS to serve it, or the code to answer with at once;
    `payload` is how many bytes of payload follow the header; `close` says
    the stream cannot be trusted after this answer."""

    result: int
    payload: int
    close: bool = False


def check_header(req: Request) -> Verdict:
    """Validate what a header promises, before anything is allocated.

    A request carries a payload only with SD_FLAG_CMD_WRITE; otherwise
    data_length is the length it wants back. Both are capped by
    MAX_DATA_LENGTH: past that we answer INVALID_PARMS and close, since
    skipping gigabytes of a garbage stream is pointless."""
    if req.data_length > MAX_DATA_LENGTH:
        return Verdict(Res.INVALID_PARMS, 0, close=True)
    payload = req.data_length if req.flags & Flag.CMD_WRITE else 0
    if req.opcode >= 0x80:
        if req.proto_ver != SD_SHEEP_PROTO_VER:
            return Verdict(Res.VER_MISMATCH, payload)
    elif req.proto_ver > SD_PROTO_VER:
        return Verdict(Res.VER_MISMATCH, payload)
    return Verdict(Res.SUCCESS, payload)


class RequestDecoder:
    """Buffers received bytes and yields request headers.

    Resource handling: owns one fixed buffer of `capacity` bytes; nothing
    else is allocated per request."""

    def __init__(self, capacity: int = RECV_CHUNK) -> None:
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def recv_buffer(self) -> memoryview:
        """Free space to receive into (compacting first if needed)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._end < SD_REQ_SIZE:
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start:self._end]
            self._start, self._end = 0, n
        return self._view[self._end:]

    def commit(self, n: int) -> None:
        """`n` bytes were received into the last recv_buffer()."""
        self._end += n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copying convenience for tests and non-socket streams."""
        view = memoryview(data).cast("B")
        while view:
            space = self.recv_buffer()
            if not space:
                raise ProtocolError("decoder buffer full")
            n = min(len(space), len(view))
            space[:n] = view[:n]
            self.commit(n)
            view = view[n:]

    def next_header(self) -> Request | None:
        """The next complete header, or None until more bytes arrive."""
        if self._end - self._start < SD_REQ_SIZE:
            return None
        req = Request.unpack(self._view[self._start:self._start + SD_REQ_SIZE])
        self._start += SD_REQ_SIZE
        return req

    def take_into(self, out: memoryview) -> int:
        """Move already-buffered payload bytes into `out`; returns how many."""
        n = min(len(out), self._end - self._start)
        if n:
            out[:n] = self._view[self._start:self._start + n]
            self._start += n
        return n

    def skip(self, n: int) -> int:
        """Drop up to `n` buffered bytes (a refused request's payload)."""
        n = min(n, self._end - self._start)
        self._start += n
        return n


def response_header(req: Request, result: int, *, args: bytes = _ZERO28,
                    data_length: int = 0, epoch: int = 0, flags: int = 0) -> bytes:
    """The 48-byte answer to `req` (its opcode and id echoed back)."""
    return Response(req.opcode, result, flags, epoch, req.id, data_length,
                    args, req.proto_ver or SD_PROTO_VER).pack()
