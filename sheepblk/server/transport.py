"""Byte transports a connection runs over: a TCP socket, or any trio Stream.

The socket version receives with recv_into and sends with sendmsg, so
payloads move between the kernel and request buffers without copies; the
stream version exists so tests can drive a connection over
trio.testing.memory_stream_pair.
"""

from __future__ import annotations

import abc
import os
import socket
from pathlib import Path

import trio

# Copy size of the generic (non-socket) sendfile.
_FILE_CHUNK = 1 << 20
# Where in the store a sheep also listens, as C Sheepdog does (STORE/sock):
# clients on the same host (QEMU's sheepdog+unix://, our nbdkit plugin with
# address=unix:STORE/sock) skip the TCP stack on every request.
UNIX_SOCKET = "sock"


def open_unix_listener(path: Path) -> trio.SocketListener:
    """Listen on a unix socket at `path`, replacing a stale one (a sheep
    that did not stop cleanly leaves its socket file behind)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


class Transport(abc.ABC):
    @abc.abstractmethod
    async def recv_into(self, buf: memoryview) -> int:
        """Receive at most len(buf) bytes; 0 means the peer closed."""

    @abc.abstractmethod
    async def send_all(self, parts: list[memoryview]) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send up to `count` bytes of file `fd` from `offset`; returns how
        many were sent (fewer only if the file ends first)."""
        sent = 0
        while sent < count:
            chunk = os.pread(fd, min(count - sent, _FILE_CHUNK), offset + sent)
            if not chunk:
                break
            await self.send_all([memoryview(chunk)])
            sent += len(chunk)
        return sent

    async def recv_exact(self, buf: memoryview) -> bool:
        """Fill `buf` entirely; False if the peer closed first."""
        got = 0
        while got < len(buf):
            n = await self.recv_into(buf[got:])
            if n == 0:
                return False
            got += n
        return True


class SocketTransport(Transport):
    """Why raw syscalls: trio's socket methods wrap every call in two
    scheduler checkpoints, which cost more than a 4 KiB request's whole
    syscall. Here the non-blocking syscall is tried first and the task waits
    (a checkpoint) only when the kernel has nothing for it; callers that may
    loop without blocking must checkpoint themselves (Connection does)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sock = stream.socket
        # The stdlib socket under trio's wrapper: non-blocking already.
        self._raw: socket.socket = getattr(self.sock, "_sock", None) or socket.socket(
            fileno=self.sock.fileno())
        if self._raw.family != socket.AF_UNIX:  # a unix socket has no Nagle to turn off
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    async def recv_into(self, buf: memoryview) -> int:
        while True:
            try:
                return self._raw.recv_into(buf)
            except BlockingIOError:
                pass
            await trio.lowlevel.wait_readable(self._raw)

    async def send_all(self, parts: list[memoryview]) -> None:
        parts = [p for p in parts if len(p)]
        while parts:
            try:
                sent = self._raw.sendmsg(parts)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._raw)
                continue
            while parts and sent >= len(parts[0]):
                sent -= len(parts[0])
                parts.pop(0)
            if parts:
                if sent:
                    parts[0] = parts[0][sent:]
                # The socket buffer is full: wait instead of spinning.
                await trio.lowlevel.wait_writable(self._raw)

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """os.sendfile: page-cache pages go to the socket without a copy
        through our memory (and without a worker thread)."""
        out = self._raw.fileno()
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._raw)
                continue
            if n == 0:
                break
            sent += n
            if sent < count:
                await trio.lowlevel.wait_writable(self._raw)
        return sent

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def peer(self) -> str:
        try:
            if self._raw.family == socket.AF_UNIX:
                return "unix"  # a local client: no address of its own
            host, port = self.sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"


class StreamTransport(Transport):
    """Any trio Stream (copies; for tests and odd transports)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._pending = b""

    async def recv_into(self, buf: memoryview) -> int:
        if not self._pending:
            self._pending = bytes(await self.stream.receive_some(max(len(buf), 1)))
            if not self._pending:
                return 0
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    async def send_all(self, parts: list[memoryview]) -> None:
        for p in parts:
            if len(p):
                await self.stream.send_all(p)

    async def aclose(self) -> None:
        await self.stream.aclose()

    peer = "stream"
