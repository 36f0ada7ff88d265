"""Byte-addressed I/O on a VDI: offsets to objects, copy-on-write, index updates.

This is the one place where a VDI's bytes are mapped onto 4 MiB objects, as
QEMU's block/sheepdog.c does it: a write to an object the VDI does not own
yet creates it (from zeros, or with SD_FLAG_CMD_COW from the object it still
shares with a snapshot), then points data_vdi_id[idx] at the VDI's own id.
Every frontend (dog, nbdkit, sheepfs) goes through here, so they all agree.

A hyper volume (store_policy 1) keeps that index as a B-tree instead
(client/hyper.py): `index` is then a SparseIndex and index changes go
through its HyperTree; reads and writes of mapped objects take the same
path as for any VDI.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import NamedTuple

from ..proto import (
    Flag,
    InodeHeader,
    Res,
    data_vid_offset,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from .connection import Buffer, Connection
from .errors import ClientError, SheepdogError
from .hyper import HYPER_VOLUME, HyperTree, Index, SparseIndex
from .sheep import SheepClient

# How many object requests of one large I/O run at once.
MAX_PARALLEL_OBJECTS = 8
# Far more stripes than parallel objects: two allocations rarely share one.
IDX_LOCK_STRIPES = 64
_U32 = struct.Struct("<I")


class Chunk(NamedTuple):
    """The part of an I/O that falls in one object."""

    idx: int
    offset: int  # within the object
    length: int
    pos: int  # within the caller's buffer


class Extent(NamedTuple):
    offset: int
    length: int
    allocated: bool


class ReadOnlyError(ClientError):
    """A write to a VDI opened read-only (EROFS)."""

    errno = 30  # EROFS


def split(offset: int, length: int, object_size: int) -> Iterator[Chunk]:
    """The pieces of an I/O at `offset` of `length` bytes, one per object."""
    pos = 0
    while pos < length:
        idx, off = divmod(offset + pos, object_size)
        n = min(object_size - off, length - pos)
        yield Chunk(idx, off, n, pos)
        pos += n


class Vdi:
    """An open VDI (or snapshot). Thread-safe: many threads may read and
    write at once; writes that allocate the same object are serialised.

    Resource handling: holds the VDI lock when opened for writing with
    `lock=True` (released by close()); owns a thread pool for fan-out.
    Error handling: result codes raise SheepdogError; a write to a snapshot
    or a read-only open raises ReadOnlyError; I/O past the end ValueError.
    """

    def __init__(self, client: SheepClient, name: str, *, tag: str = "", snapid: int = 0,
                 writable: bool = True, lock: bool = False, shared: bool = False,
                 cache: bool = False) -> None:
        self.client = client
        self.name = name
        self.cache = cache
        self._locked = False
        self._shared = shared
        # The lock lives as long as the connection that took it: keep that
        # one out of the pool, where an I/O error or a shrink could close it.
        self._lock_conn: Connection | None = None
        if lock:
            self._lock_conn = client.connect()
            try:
                self.vid = client.lock_vdi(name, tag, snapid, shared=shared,
                                           conn=self._lock_conn)
            except BaseException:
                self._lock_conn.close()
                raise
            self._locked = True
        else:
            self.vid = client.lookup_vdi(name, tag, snapid).vid
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise
        self.writable = writable and not self.inode.is_snapshot
        self._alloc_lock = threading.Lock()
        # Allocation locks, striped by object index: bounded however many
        # objects a VDI has, and no thread ever holds two.
        self._idx_locks = [threading.Lock() for _ in range(IDX_LOCK_STRIPES)]
        # Objects allocated by cached writes since the last flush (see pwrite).
        self._unflushed_allocs: set[int] = set()
        self._zero_buf: memoryview | None = None
        self._pool = ThreadPoolExecutor(MAX_PARALLEL_OBJECTS, thread_name_prefix="vdi-io")
        if self.writable and cache:
            # An earlier writer's cached allocations are not in our
            # _unflushed_allocs: one flush now makes them durable, so a FUA
            # write into such an object is durable with its index entry.
            try:
                self.flush()
            except BaseException:
                self.close()
                raise

    # ---- metadata ----

    def refresh(self) -> None:
        """Read the inode header and the index entries the size spans."""
        hdr = self.client.read_inode_header(self.vid)
        self.inode: InodeHeader = hdr
        self.object_size = hdr.object_size
        self.index: Index
        self._hyper: HyperTree | None = None
        n = hdr.nr_objects
        if hdr.store_policy == HYPER_VOLUME:
            self._hyper = HyperTree(self.client, self.vid)
            self.index = self._hyper.sparse_index()
        elif n:
            raw = self.client.read_obj(vid_to_vdi_oid(self.vid), 4 * n, data_vid_offset(0))
            self.index = list(struct.unpack(f"<{n}I", raw))
        else:
            self.index = []

    @property
    def size(self) -> int:
        return self.inode.vdi_size

    @property
    def oid(self) -> int:
        return vid_to_vdi_oid(self.vid)

    def _flags(self) -> int:
        return Flag.CMD_CACHE if self.cache else 0

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"I/O at {offset}+{length} is outside {self.name} ({self.size} bytes)")

    def _run(self, chunks: list[Chunk], fn) -> None:  # type: ignore[no-untyped-def]
        if len(chunks) == 1:
            fn(chunks[0])
            return
        futs = [self._pool.submit(fn, c) for c in chunks]
        # Wait for every chunk before raising: the caller's buffer (nbdkit's
        # memoryview, freed when the callback returns) must not be written
        # by a chunk still in flight after the first one failed.
        wait(futs)
        for fut in futs:
            fut.result()

    # ---- reads ----

    def pread_into(self, buf: Buffer, offset: int) -> None:
        """Fill `buf` with the VDI's bytes at `offset`; holes read as zeros."""
        view = memoryview(buf).cast("B")
        n = len(view)
        idx, off = divmod(offset, self.object_size)
        if 0 < n <= self.object_size - off and 0 <= offset <= self.inode.vdi_size - n:
            # Fast path: inside one object (every 4 KiB request), no fan-out.
            owner = self.index[idx]
            if owner:
                self.client.read_obj(vid_to_data_oid(owner, idx), n, off, rbuf=view)
            else:
                view[:] = self._zeros(n)
            return
        self._check_range(offset, n)

        def one(c: Chunk) -> None:
            dst = view[c.pos:c.pos + c.length]
            owner = self.index[c.idx]
            if not owner:
                dst[:] = self._zeros(c.length)
                return
            self.client.read_obj(vid_to_data_oid(owner, c.idx), c.length, c.offset, rbuf=dst)

        self._run(list(split(offset, len(view), self.object_size)), one)

    def pread(self, length: int, offset: int) -> bytearray:
        buf = bytearray(length)
        self.pread_into(buf, offset)
        return buf

    # ---- writes ----

    def _idx_lock(self, idx: int) -> threading.Lock:
        return self._idx_locks[idx % IDX_LOCK_STRIPES]

    def _require_writable(self) -> None:
        if not self.writable:
            if self.inode.is_snapshot:
                raise SheepdogError(Res.READONLY, self.name)
            raise ReadOnlyError(f"{self.name} is open read-only")

    def _set_index(self, idx: int, vid: int, flags: int | None = None) -> None:
        if flags is None:
            flags = self._flags()
        if self._hyper is not None:
            self._hyper.set(idx, vid, flags)
            assert isinstance(self.index, SparseIndex)
            if vid:
                self.index[idx] = vid
            else:
                self.index.pop(idx, None)
            return
        self.client.write_obj(self.oid, _U32.pack(vid), data_vid_offset(idx), flags=flags)
        self.index[idx] = vid

    def _write_chunk(self, c: Chunk, data: memoryview, flags: int | None = None) -> None:
        if flags is None:
            flags = self._flags()
        if self.index[c.idx] == self.vid:
            self.client.write_obj(vid_to_data_oid(self.vid, c.idx), data, c.offset,
                                  flags=flags)
            return
        with self._idx_lock(c.idx):
            owner = self.index[c.idx]
            if owner == self.vid:  # another thread allocated it meanwhile
                self.client.write_obj(vid_to_data_oid(self.vid, c.idx), data, c.offset,
                                      flags=flags)
                return
            cow = vid_to_data_oid(owner, c.idx) if owner else 0
            self.client.create_and_write_obj(
                vid_to_data_oid(self.vid, c.idx), data, c.offset, cow_oid=cow,
                copies=self.inode.nr_copies, flags=flags)
            self._set_index(c.idx, self.vid, flags)
            if flags & Flag.CMD_CACHE:
                with self._alloc_lock:
                    self._unflushed_allocs.add(c.idx)

    def pwrite(self, buf: Buffer, offset: int, *, fua: bool = False) -> None:
        """Write `buf` at `offset`. With `fua` (force unit access) this write,
        and the index update it may make, go without the cache flag: they are
        on stable storage on every copy when pwrite returns, without flushing
        the rest of the VDI."""
        view = memoryview(buf).cast("B")
        n = len(view)
        self._require_writable()
        flags = 0 if fua else self._flags()
        idx, off = divmod(offset, self.object_size)
        if 0 < n <= self.object_size - off and 0 <= offset <= self.inode.vdi_size - n:
            self._write_chunk(Chunk(idx, off, n, 0), view, flags)  # one object: no fan-out
            chunks = [idx]
        else:
            self._check_range(offset, n)
            parts = list(split(offset, len(view), self.object_size))
            self._run(parts, lambda c: self._write_chunk(c, view[c.pos:c.pos + c.length], flags))
            chunks = [c.idx for c in parts]
        if fua and self._unflushed_allocs:
            # The object, or its index entry, came from a cached write not
            # flushed yet: this write's data would be durable but unreachable
            # after a crash. Flushing makes the allocation durable too.
            with self._alloc_lock:
                pending = any(i in self._unflushed_allocs for i in chunks)
            if pending:
                self.flush()

    def _zeros(self, length: int) -> memoryview:
        """A read-only view of `length` zero bytes, shared by every caller
        (a partial zero must not allocate up to 4 MiB each time)."""
        zeros = self._zero_buf
        if zeros is None:
            zeros = self._zero_buf = memoryview(bytes(self.object_size))
        return zeros[:length]

    def zero(self, length: int, offset: int, *, may_trim: bool = True) -> None:
        """Make a range read as zeros: whole objects are freed (discard),
        partial ones get zeros written only where an object exists.
        With `may_trim` false (NBD's NO_HOLE) nothing is freed: allocated
        objects get zeros written instead, holes stay holes (they read as
        zeros already)."""
        self._check_range(offset, length)
        self._require_writable()

        def one(c: Chunk) -> None:
            if not self.index[c.idx]:
                return
            if may_trim and c.length == self.object_size:
                with self._idx_lock(c.idx):
                    self._discard(c.idx)
            else:
                self._write_chunk(c, self._zeros(c.length))

        self._run(list(split(offset, length, self.object_size)), one)

    def _discard(self, idx: int) -> None:
        """Unmap object idx and free it (SD_OP_DISCARD_OBJ). For a hyper
        volume this is done here as Sheepdog's daemon does it (the record
        stays with vdi_id 0, then the object is removed): the flat-index
        discard would write into the B-tree."""
        if self._hyper is None:
            self.client.discard_obj(vid_to_data_oid(self.vid, idx))
            self.index[idx] = 0
            return
        owner = self.index[idx]
        if not owner:
            return
        self._set_index(idx, 0, 0)
        if owner == self.vid:
            self.client.remove_obj(vid_to_data_oid(owner, idx))

    def zero_is_fast(self, length: int, offset: int, *, may_trim: bool = True) -> bool:
        """Whether zero() would send no zero bytes (only frees objects or
        skips holes): NBD's FAST_ZERO asks to fail rather than be slow."""
        for c in split(offset, length, self.object_size):
            if self.index[c.idx] and not (may_trim and c.length == self.object_size):
                return False
        return True

    trim = zero

    def flush(self) -> None:
        """Make every acknowledged write durable on every copy."""
        with self._alloc_lock:
            flushed, self._unflushed_allocs = self._unflushed_allocs, set()
        try:
            self.client.flush(self.vid)
        except BaseException:
            with self._alloc_lock:
                self._unflushed_allocs |= flushed
            raise

    def prefetch(self, length: int, offset: int) -> None:
        """Read the allocated part of a range and drop the bytes: warms the
        sheeps' page cache ahead of reads (NBD_CMD_CACHE). Holes cost
        nothing; nothing is kept on this side."""
        self._check_range(offset, length)

        def one(c: Chunk) -> None:
            owner = self.index[c.idx]
            if owner:
                self.client.read_obj(vid_to_data_oid(owner, c.idx), c.length, c.offset,
                                     rbuf=bytearray(c.length))

        self._run(list(split(offset, length, self.object_size)), one)

    # ---- layout ----

    def extents(self, length: int, offset: int) -> list[Extent]:
        """Allocated and hole ranges (merged), by the cached index."""
        self._check_range(offset, length)
        out: list[Extent] = []
        for c in split(offset, length, self.object_size):
            alloc = bool(self.index[c.idx])
            start = offset + c.pos
            if out and out[-1].allocated == alloc:
                last = out[-1]
                out[-1] = Extent(last.offset, last.length + c.length, alloc)
            else:
                out.append(Extent(start, c.length, alloc))
        return out

    def allocated_objects(self) -> int:
        values = self.index.values() if isinstance(self.index, SparseIndex) else self.index
        return sum(1 for v in values if v == self.vid)

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        if self._locked:
            self._locked = False
            try:
                self.client.release_vdi(self.vid, shared=self._shared, conn=self._lock_conn)
            except ClientError:
                pass
        if self._lock_conn is not None:
            self._lock_conn.close()
            self._lock_conn = None

    def __enter__(self) -> Vdi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Chunk", "Extent", "ReadOnlyError", "Vdi", "split"]
