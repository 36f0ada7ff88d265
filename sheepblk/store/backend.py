"""The abstract object store a sheep keeps its objects in.

All methods are blocking (plain file I/O); the server calls them through
`trio.to_thread.run_sync`, so a backend never has to know about trio.
Buffers are memoryviews owned by the caller: a backend reads into them and
writes from them, it never copies a payload into new bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator


class ObjectStore(abc.ABC):
    """One node's objects.

    Error handling: NoObject when an object is missing, NoSpace on ENOSPC,
    StoreIOError for other OS errors (see .errors).
    """

    name: str
    # True when a small read, or a write that need not reach the disk before
    # the answer, costs microseconds (a page-cache pread/pwrite): the daemon
    # then serves it on its event loop instead of paying a worker-thread hop.
    # False for backends that decompress or checksum whole objects.
    cheap_small_io: bool = False

    @abc.abstractmethod
    def read_into(self, oid: int, offset: int, buf: memoryview) -> None:
        """Fill `buf` with the object's bytes at `offset`; bytes never
        written read as zeros."""

    @abc.abstractmethod
    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        """Overwrite part of an existing object; durable on return if `sync`."""

    @abc.abstractmethod
    def create_and_write(self, oid: int, size: int, offset: int, data: memoryview, *,
                         cow_oid: int = 0, sync: bool) -> None:
        """Atomically create (or replace) an object of `size` bytes: zeros,
        or the bytes of `cow_oid`, with `data` written at `offset`."""

    @abc.abstractmethod
    def remove(self, oid: int) -> None:
        """Delete the object (NoObject when absent)."""

    @abc.abstractmethod
    def move_to_stale(self, oid: int, epoch: int) -> None:
        """Keep an object this node no longer owns aside, for recovery."""

    @abc.abstractmethod
    def exists(self, oid: int) -> bool: ...

    @abc.abstractmethod
    def oids(self) -> Iterator[int]:
        """Every object id stored here (in no particular order)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every write done without sync durable."""

    @abc.abstractmethod
    def format(self) -> None:
        """Drop every object (cluster format)."""

    @abc.abstractmethod
    def space(self) -> tuple[int, int]:
        """(size, used) in bytes of the store's filesystem."""
