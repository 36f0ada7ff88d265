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

from .connection import DEFAULT_TIMEOUT, Connection

DEFAULT_POOL_SIZE = 8


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
