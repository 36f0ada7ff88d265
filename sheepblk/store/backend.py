"""The abstract object store a sheep keeps its objects in.

All methods are blocking (plain file I/O); the server calls them through
`trio.to_thread.run_sync`, so a backend never has to know about trio.
Buffers are memoryviews owned by the caller: a backend reads into them and
writes from them, it never copies a payload into new bytes.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import NoObject, StoreIOError, Unsupported


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

    # ---- capabilities ----
    #
    # Declared here rather than probed with hasattr: a caller reads the
    # flag, and a store without the feature still has the method, with a
    # defined answer (Unsupported, or a no-op where it means nothing).

    # Where the store keeps its object files (what `dog node md info`
    # shows, and whose access rights tell a disk is still there); None for
    # a store without one directory of its own (MdStore spans several).
    obj_dir: Path | None = None
    # Whether open_read gives an fd to sendfile from: only where an
    # object's file holds its bytes as they are (plain).
    can_open_read: bool = False
    # Whether reopen can switch the store to another backend: only a store
    # that makes its backends (MdStore); a single backend is what it is.
    can_reopen: bool = False

    def open_read(self, oid: int) -> tuple[int, int]:
        """A new fd of the object's file, open for reading (the caller
        closes it), and the file's size (bytes past it read as zeros).
        Unsupported unless `can_open_read`."""
        raise Unsupported(f"{self.name} store: no object files to read from")

    def reopen(self, kind: str) -> None:
        """Become an (empty, once formatted) store of backend `kind`, the
        `dog cluster format -b` name. A no-op when `kind` is the store's
        own; Unsupported for another unless `can_reopen`."""
        if kind != self.name:
            raise Unsupported(f"a {self.name} store cannot become a {kind} store")

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

    # ---- stale copies: obj/.stale/OID.EPOCH ----
    #
    # EPOCH is the last epoch in which this node owned the object, so the
    # copy holds the object as it was at the end of that epoch. Recovery
    # reads them when no current copy is left (see server/recovery.py).
    # The defaults below work on `stale_dir` with files in the object's own
    # format read raw (plain); a backend that encodes objects overrides
    # `read_stale`.

    stale_dir: Path | None = None

    def _stale_path(self, oid: int, epoch: int) -> str:
        return f"{self.stale_dir}/{oid:016x}.{epoch}"

    def stale_copies(self) -> Iterator[tuple[int, int]]:
        """(oid, epoch) of every stale copy kept here."""
        if self.stale_dir is None:
            return
        try:
            with os.scandir(self.stale_dir) as it:
                names = [e.name for e in it if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for name in names:
            head, _, tail = name.partition(".")
            if len(head) == 16 and tail.isdigit():
                try:
                    yield int(head, 16), int(tail)
                except ValueError:
                    continue

    def read_stale(self, oid: int, epoch: int, buf: memoryview) -> None:
        """Fill `buf` from the start of the stale copy OID.EPOCH (zeros past
        its end); NoObject when there is none."""
        try:
            fd = os.open(self._stale_path(oid, epoch), os.O_RDONLY)
        except FileNotFoundError as e:
            raise NoObject(f"stale {oid:016x}.{epoch}") from e
        except OSError as e:
            raise StoreIOError(f"stale {oid:016x}.{epoch}: {e.strerror}") from e
        try:
            got = 0
            while got < len(buf):
                n = os.preadv(fd, [buf[got:]], got)
                if n == 0:
                    break
                got += n
            buf[got:] = bytes(len(buf) - got)
        finally:
            os.close(fd)

    def remove_stale(self, oid: int, epoch: int) -> None:
        """Drop one stale copy (absent is fine)."""
        try:
            os.unlink(self._stale_path(oid, epoch))
        except FileNotFoundError:
            pass

    @abc.abstractmethod
    def exists(self, oid: int) -> bool: ...

    @abc.abstractmethod
    def object_size(self, oid: int) -> int:
        """The logical size of a stored object (NoObject when absent):
        what moving it to another disk must copy."""

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
