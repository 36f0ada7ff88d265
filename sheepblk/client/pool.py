"""A thread-safe pool of connections to one sheep.

Why: each Connection carries one request at a time, so concurrency (the
nbdkit plugin's parallel thread model, several 4 MiB requests in flight)
comes from several connections. A connection that failed is dropped, not
returned.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from .connection import DEFAULT_TIMEOUT, Connection
from .errors import NetworkError
from .pipeline import PipelinedConnection

DEFAULT_POOL_SIZE = 8


class Pool(Protocol):
    """What SheepClient needs of a pool: connections to lend and take back."""

    host: str
    port: int
    timeout: float | None

    def get(self) -> Connection | PipelinedConnection: ...

    def put(self, conn: Any) -> None: ...

    def close(self) -> None: ...


class ConnectionPool:
    """Up to `size` connections to one sheep, lent one at a time.

    Resource handling: idle connections are kept for reuse and closed by
    close(); a connection that broke (closed) is dropped when it comes back.
    Borrowing blocks while all `size` are lent.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7000,
                 size: int = DEFAULT_POOL_SIZE, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.host, self.port, self.size, self.timeout = host, port, size, timeout
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """Lend a connection for a `with` block (get() and put() around it)."""
        conn = self.get()
        try:
            yield conn
        finally:
            self.put(conn)

    def get(self) -> Connection:
        """Borrow a connection without a context manager (the hot path of
        every object request); give it back with put() in a finally."""
        self._slots.acquire()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            try:
                return Connection(self.host, self.port, self.timeout)
            except BaseException:
                self._slots.release()
                raise

    def put(self, conn: Connection) -> None:
        if conn.closed or self._closed:
            conn.close()
        else:
            self._idle.put(conn)
        self._slots.release()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PipelinedPool:
    """`size` pipelined connections to one sheep, shared by every thread:
    get() lends the one with the fewest requests in flight and never blocks
    on the others. Same interface as ConnectionPool, so SheepClient takes
    either.

    Resource handling: a connection that broke is replaced by a new one the
    next time its slot is lent; close() closes them all.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7000,
                 size: int = 1, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.host, self.port, self.size, self.timeout = host, port, size, timeout
        self._conns: list[PipelinedConnection | None] = [None] * size
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[PipelinedConnection]:
        yield self.get()

    def get(self) -> PipelinedConnection:
        conns = self._conns
        best = 0
        for i, c in enumerate(conns):
            if c is None or c.closed:
                best = i
                break
            b = conns[best]
            assert b is not None
            if c.in_flight < b.in_flight:
                best = i
        conn = conns[best]
        if conn is not None and not conn.closed:
            return conn
        with self._lock:
            if self._closed:
                raise NetworkError("connection pool is closed")
            conn = conns[best]
            if conn is None or conn.closed:
                conn = conns[best] = PipelinedConnection(self.host, self.port, self.timeout)
            return conn

    def put(self, conn: PipelinedConnection) -> None:
        """Nothing to give back: connections are shared, not lent."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, [None] * self.size
        for c in conns:
            if c is not None:
                c.close()

    def __enter__(self) -> PipelinedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
