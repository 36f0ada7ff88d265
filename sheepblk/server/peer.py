"""Peer object operations: what a node does with its own copy of an object.

These serve the *_PEER opcodes (sent by a gateway, possibly this node's
own) against the local store. Blocking file I/O runs in worker threads; the
payload buffers are the request's own, passed through as memoryviews.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from ..proto import Res, get_objsize
from ..store import InvalidRange, ObjectStore

log = logging.getLogger(__name__)

# File I/O threads: enough to keep a disk and the page cache busy from
# several connections; each holds at most one request's buffer.
IO_THREADS = 16
# Requests up to this size go straight to a store whose small I/O is cheap,
# on the event loop: a worker-thread hop costs ~100 µs of CPU here, which
# capped random 4 KiB I/O at ~5k requests/s, while a page-cache pread of a
# few KiB costs microseconds. Synchronous writes always go to a thread.
INLINE_IO_MAX = 64 << 10


class InFlightWrites:
    """The epochs of the changes to each object that were let in but have
    not reached the store yet (they wait for a worker thread or run in one).

    Why: a write let in at epoch E went to E's owners only. If the epoch
    moves on while it waits for its thread, a new owner recovering the
    object at E+1 may read our copy first, and the write, acknowledged by
    every owner of E, would never reach the new owner's copy. A recovery
    read therefore waits for the changes let in before its epoch
    (`settled`); the ones let in at its epoch also go to the new owner,
    which applies them after its recovery of the object."""

    def __init__(self) -> None:
        self._epochs: dict[int, list[int]] = {}
        self._waiters: dict[int, trio.Event] = {}

    @contextmanager
    def change(self, oid: int, epoch: int) -> Iterator[None]:
        """Mark a change of `oid` let in at `epoch` for the block's span
        (entered before the first checkpoint after the epoch was checked)."""
        epochs = self._epochs.setdefault(oid, [])
        epochs.append(epoch)
        try:
            yield
        finally:
            epochs.remove(epoch)
            if not epochs:
                del self._epochs[oid]
            ev = self._waiters.pop(oid, None)
            if ev is not None:
                ev.set()

    async def settled(self, oid: int, epoch: int) -> None:
        """Return once no change of `oid` let in before `epoch` is pending."""
        while any(e < epoch for e in self._epochs.get(oid, ())):
            ev = self._waiters.get(oid)
            if ev is None:
                ev = self._waiters[oid] = trio.Event()
            await ev.wait()


class PeerOps:
    """Resource handling: owns nothing but a thread limiter; the store is
    shared with the node. Error handling: StoreError subclasses propagate
    (the dispatcher turns them into their result codes). Every change that
    goes to a thread counts as in flight at the node's current epoch (see
    InFlightWrites): callers check the epoch, then call at once."""

    def __init__(self, store: ObjectStore, epoch: Callable[[], int] = lambda: 0) -> None:
        self.store = store
        self.limiter = trio.CapacityLimiter(IO_THREADS)
        self.epoch = epoch
        self.in_flight = InFlightWrites()

    def check_range(self, oid: int, offset: int, length: int, object_size: int) -> int:
        """The object's size, or InvalidRange for an I/O outside it: checked
        before a buffer of `length` bytes is allocated for it."""
        size = get_objsize(oid, object_size)
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidRange(
                f"{offset}+{length} outside object {oid:016x} of {size} bytes")
        return size

    def inline_ok(self, n: int) -> bool:
        """Whether an I/O of `n` bytes without fdatasync may run on the event loop."""
        return n <= INLINE_IO_MAX and self.store.cheap_small_io

    def read_now(self, oid: int, offset: int, buf: memoryview, object_size: int) -> None:
        """A read on the calling thread (see inline_ok)."""
        self.check_range(oid, offset, len(buf), object_size)
        self.store.read_into(oid, offset, buf)

    def write_now(self, oid: int, offset: int, data: memoryview, object_size: int) -> None:
        """A cached (not yet durable) write on the calling thread (see inline_ok)."""
        self.check_range(oid, offset, len(data), object_size)
        self.store.write(oid, offset, data, sync=False)

    def open_span(self, oid: int, offset: int, length: int,
                  object_size: int) -> tuple[int, int] | None:
        """For sendfile: a new fd of the object (the caller closes it) and
        how many of the `length` bytes at `offset` the file holds (zeros
        after). None when the store has no files to send from, or when the
        range is not in the page cache: sendfile would then block the event
        loop on the disk, and the thread path reads it instead."""
        if not self.store.can_open_read:
            return None
        self.check_range(oid, offset, length, object_size)
        fd, size = self.store.open_read(oid)
        count = max(0, min(length, size - offset))
        if count and not _in_page_cache(fd, offset, count):
            os.close(fd)
            return None
        return fd, count

    async def read(self, oid: int, offset: int, buf: memoryview, object_size: int) -> None:
        if self.inline_ok(len(buf)):
            self.read_now(oid, offset, buf, object_size)
            return
        self.check_range(oid, offset, len(buf), object_size)
        await trio.to_thread.run_sync(self.store.read_into, oid, offset, buf,
                                      limiter=self.limiter)

    async def write(self, oid: int, offset: int, data: memoryview, object_size: int, *,
                    sync: bool) -> None:
        if not sync and self.inline_ok(len(data)):
            self.write_now(oid, offset, data, object_size)
            return
        self.check_range(oid, offset, len(data), object_size)
        with self.in_flight.change(oid, self.epoch()):
            await trio.to_thread.run_sync(
                lambda: self.store.write(oid, offset, data, sync=sync), limiter=self.limiter)

    async def create_and_write(self, oid: int, offset: int, data: memoryview,
                               object_size: int, *, cow_oid: int = 0, sync: bool) -> None:
        size = self.check_range(oid, offset, len(data), object_size)
        with self.in_flight.change(oid, self.epoch()):
            await trio.to_thread.run_sync(
                lambda: self.store.create_and_write(oid, size, offset, data, cow_oid=cow_oid,
                                                    sync=sync),
                limiter=self.limiter)

    async def remove(self, oid: int) -> None:
        with self.in_flight.change(oid, self.epoch()):
            await trio.to_thread.run_sync(self.store.remove, oid, limiter=self.limiter)

    async def exists(self, oid: int) -> bool:
        return await trio.to_thread.run_sync(self.store.exists, oid, limiter=self.limiter)

    async def flush(self) -> None:
        await trio.to_thread.run_sync(self.store.flush, limiter=self.limiter)


_PROBE = memoryview(bytearray(1))


def _in_page_cache(fd: int, offset: int, count: int) -> bool:
    """Whether the first, middle and last byte of the range are cached (a
    read with RWF_NOWAIT fails with EAGAIN rather than wait for the disk)."""
    try:
        for pos in (offset, offset + count // 2, offset + count - 1):
            os.preadv(fd, [_PROBE], pos, os.RWF_NOWAIT)
    except OSError:
        return False
    return True


def result_of(exc: BaseException) -> int:
    return getattr(exc, "result", Res.EIO)
