"""One blocking connection to a sheep, speaking the 48-byte protocol.

Blocking sockets on purpose: every frontend (dog, the nbdkit plugin, which
runs under Debian's own python3, and sheepfs through trio.to_thread) can use
them, and the library then needs nothing beyond the standard library.
Payloads go out with sendmsg straight from the caller's buffers and come back
with recv_into straight into the caller's buffer: no copies of 4 MiB objects.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Container, Iterator

from ..proto import SD_RSP_SIZE, Request, Res, Response
from .errors import NetworkError, SheepdogError

DEFAULT_PORT = 7000
# collections.abc.Buffer is 3.12+; nbdkit embeds Debian's 3.11.
Buffer = bytes | bytearray | memoryview
# Generous: a 64 MiB read from a loaded node can take seconds; a dead peer is
# still noticed because the kernel closes the socket.
DEFAULT_TIMEOUT = 120.0


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[V6]:PORT' or 'unix:PATH' to (host, port).
    A sheep's unix socket (STORE/sock, as C Sheepdog's) comes back as its
    absolute path with port 0: a host that starts with "/" is a path."""
    if text.startswith("unix:"):
        path = os.path.abspath(text[5:]) if text[5:] else ""
        return path, 0
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if text.count(":") == 1:
        host, port_s = text.split(":")
        return host or "127.0.0.1", int(port_s)
    return text, default_port


def open_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    """A connected stream socket: TCP with Nagle off, or a unix socket
    when `host` is a path (see parse_address)."""
    try:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(host)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise NetworkError(f"cannot connect to {address_text(host, port)}: {e.strerror or e}") from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def skip_sent(parts: list[memoryview], sent: int) -> None:
    """Drop the first `sent` bytes of `parts` (what one sendmsg took)."""
    while parts and sent >= len(parts[0]):
        sent -= len(parts[0])
        parts.pop(0)
    if parts and sent:
        parts[0] = parts[0][sent:]


def sendmsg_all(sock: socket.socket, parts: list[memoryview]) -> None:
    """sendmsg until all of `parts` went: it may take less than everything
    (signals, huge buffers, a socket with a timeout)."""
    while parts:
        skip_sent(parts, sock.sendmsg(parts))


def answer_view(n: int, rbuf: memoryview | None) -> memoryview:
    """Where an answer's `n` payload bytes go: the caller's buffer when it
    gave one (NetworkError if they do not fit), else a new one."""
    if rbuf is None:
        return memoryview(bytearray(n))
    if n > len(rbuf):
        raise NetworkError(f"response of {n} bytes exceeds the {len(rbuf)}-byte buffer")
    return rbuf[:n]


def free_id(ids: Iterator[int], pending: Container[int]) -> int:
    """The next 32-bit request id that is not 0 and not in flight (ids
    wrap after 2**32 requests on one connection)."""
    rid = next(ids) & 0xFFFFFFFF
    while rid == 0 or rid in pending:
        rid = next(ids) & 0xFFFFFFFF
    return rid


def call_outcome(error: BaseException | None, rsp: Response | None, out: memoryview | None,
                 check: bool, context: str) -> tuple[Response, memoryview]:
    """What a finished pipelined request returns or raises: the stream's
    error, or its answer (SheepdogError for a result code when `check`)."""
    if error is not None:
        raise error
    assert rsp is not None and out is not None
    if check and rsp.result != Res.SUCCESS:
        raise SheepdogError(rsp.result, context)
    return rsp, out


def address_text(host: str, port: int) -> str:
    """How messages name a sheep's address."""
    return f"unix:{host}" if host.startswith("/") else f"{host}:{port}"


class Connection:
    """A connection that carries one request at a time.

    Resource handling: owns its socket; close() or the context manager frees
    it. Error handling: network failures raise NetworkError and leave the
    connection closed (a half-read stream cannot be resynchronised); a result
    code other than SUCCESS raises SheepdogError when `check` is true.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.host, self.port = host, port
        self.sock = open_socket(host, port, timeout)
        self._ids = itertools.count(1)
        self._hdr = bytearray(SD_RSP_SIZE)
        self.closed = False

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        total = len(view)
        while got < total:
            n = self.sock.recv_into(view[got:], total - got)
            if n == 0:
                raise NetworkError(f"{address_text(self.host, self.port)} closed the connection")
            got += n

    def _recv_header_and_payload(self, hdr: memoryview, out: memoryview) -> int:
        """Receive the whole header, scattering anything after it into `out`
        (at most len(out) bytes, the payload asked for: one request is in
        flight, so nothing of a later response can arrive). Returns how many
        payload bytes came with it."""
        size = len(hdr)
        got = 0
        while got < size:
            n = self.sock.recvmsg_into([hdr[got:], out])[0]
            if n == 0:
                raise NetworkError(f"{address_text(self.host, self.port)} closed the connection")
            got += n
        return got - size

    def _send_all(self, parts: list[memoryview]) -> None:
        sendmsg_all(self.sock, parts)

    def execute(self, req: Request, data: Buffer | None = None, *,
                rbuf: Buffer | None = None, check: bool = True,
                context: str = "") -> tuple[Response, memoryview]:
        """Send `req` (with `data` as payload) and return the response and
        its payload. `req.data_length` is the payload length for writes and
        the wanted length for reads. The payload lands in `rbuf` when given."""
        if self.closed:
            raise NetworkError("connection is closed")
        req = req._replace(id=next(self._ids) & 0xFFFFFFFF)
        try:
            if data is not None and len(memoryview(data)):
                self._send_all([memoryview(req.pack()), memoryview(data).cast("B")])
            else:
                self.sock.sendall(req.pack())
            hdr = memoryview(self._hdr)
            if rbuf is not None and req.data_length and data is None:
                # A read into the caller's buffer: header and payload usually
                # arrive in one recvmsg_into, one syscall instead of two.
                out = memoryview(rbuf).cast("B")
                early = self._recv_header_and_payload(hdr, out[:req.data_length])
                rsp = Response.unpack(hdr)
                n = rsp.data_length
                if n > len(out) or early > n:
                    raise NetworkError(f"response of {n} bytes exceeds the {len(out)}-byte buffer")
                out = out[:n]
                if n > early:
                    self._recv_exact(out[early:])
            else:
                self._recv_exact(hdr)
                rsp = Response.unpack(hdr)
                n = rsp.data_length
                if rbuf is not None:
                    out = memoryview(rbuf).cast("B")
                    if n > len(out):
                        raise NetworkError(
                            f"response of {n} bytes exceeds the {len(out)}-byte buffer")
                    out = out[:n]
                else:
                    out = memoryview(bytearray(n))
                if n:
                    self._recv_exact(out)
        except (OSError, NetworkError) as e:
            self.close()
            if isinstance(e, NetworkError):
                raise
            raise NetworkError(f"{address_text(self.host, self.port)}: {e.strerror or e}") from e
        except BaseException:
            # Interrupted half-way (KeyboardInterrupt, a bad header): the
            # stream is out of step, so the connection must never be reused.
            self.close()
            raise
        if check and rsp.result != Res.SUCCESS:
            raise SheepdogError(rsp.result, context)
        return rsp, out
