"""One file's volatile bytes over its durable backing file.

Why two views: what a reader of the mount sees (every write so far) is
not what survives a power cut (what fsync made durable). The backing file
holds the durable bytes; `FileData` holds the rest:

- `chunks`: the current content of every CHUNK-sized piece touched since
  the backing file was last brought up to date, for reads (O(1) a chunk,
  no scan of the log);
- `log`: the writes and truncates not yet durable, in order, for fsync
  (replay them onto the backing file) and for a crash that keeps a subset.

Bytes past `base_limit` in the backing file are stale (a truncate cut them
off) and read as zeros; bytes in a chunk past `size` are always zero.
No I/O happens here except on the backing fd the caller passes in.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

# Read-cache granularity: big enough that a 1 MiB FUSE write touches 16
# chunks, not 256 pages (per-write Python work stays small).
CHUNK = 64 * 1024
# A torn write keeps a prefix cut at this granularity (the page cache
# writes back whole pages).
TEAR = 4096


@dataclass(frozen=True)
class Write:
    """A pwrite not yet durable (`data` is the bytes FUSE handed us)."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncate:
    """An ftruncate (or O_TRUNC) not yet durable."""

    size: int


DataOp = Write | Truncate


def pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """Fill `buf` from `fd` at `offset`; the count read (short at EOF)."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def apply_ops(fd: int, ops: list[DataOp]) -> None:
    """Replay `ops` onto the backing file `fd`, in order."""
    for op in ops:
        if isinstance(op, Write):
            pwrite_all(fd, op.data, op.offset)
        else:
            os.ftruncate(fd, op.size)


def choose_subset(ops: list[DataOp], rng: random.Random) -> tuple[list[DataOp], int]:
    """A random subset of `ops` (kept in their order) that a power cut may
    leave: each op kept or not at random, a kept write of several pages
    sometimes torn to a page-aligned prefix. Returns the ops and how many
    writes were torn."""
    kept: list[DataOp] = []
    torn = 0
    for op in ops:
        if rng.random() < 0.5:
            continue
        if isinstance(op, Write) and rng.random() < 0.5:
            first = op.offset // TEAR + 1  # cut points strictly inside the write
            last = (op.offset + len(op.data) - 1) // TEAR
            if first <= last:
                cut = rng.randint(first, last) * TEAR
                op = Write(op.offset, op.data[:cut - op.offset])
                torn += 1
        kept.append(op)
    return kept, torn


class FileData:
    """Resource handling: owns only memory; the backing fd belongs to the
    caller and is passed to each call that needs it.
    Error handling: OSError from the backing fd propagates."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.base_limit = size
        self.chunks: dict[int, bytearray] = {}
        self.log: list[DataOp] = []
        # A failed fsync dropped writes that readers still see (as Linux's
        # page cache does): the chunks must then never be thrown away in
        # favour of the backing file, which lacks those bytes.
        self.lost = False

    @property
    def dirty_bytes(self) -> int:
        return sum(len(op.data) for op in self.log if isinstance(op, Write))

    def _chunk(self, fd: int, idx: int) -> bytearray:
        chunk = self.chunks.get(idx)
        if chunk is None:
            chunk = bytearray(CHUNK)
            start = idx * CHUNK
            if start < self.base_limit:
                want = min(CHUNK, self.base_limit - start)
                pread_into(fd, memoryview(chunk)[:want], start)
            self.chunks[idx] = chunk
        return chunk

    def read(self, fd: int, offset: int, size: int) -> bytearray:
        """The volatile bytes of [offset, offset+size), short at EOF."""
        end = min(offset + size, self.size)
        if offset >= end:
            return bytearray()
        out = bytearray(end - offset)
        view = memoryview(out)
        pos = offset
        while pos < end:
            idx = pos // CHUNK
            stop = min((idx + 1) * CHUNK, end)
            chunk = self.chunks.get(idx)
            if chunk is not None:
                view[pos - offset:stop - offset] = chunk[pos - idx * CHUNK:stop - idx * CHUNK]
                pos = stop
                continue
            while stop < end and stop // CHUNK not in self.chunks:  # one pread for a run
                stop = min(stop + CHUNK, end)
            limit = min(stop, self.base_limit)
            if pos < limit:
                pread_into(fd, view[pos - offset:limit - offset], pos)
            pos = stop
        return out

    def write(self, fd: int, offset: int, data: bytes) -> None:
        if not data:
            return
        self.log.append(Write(offset, data))
        end = offset + len(data)
        src = memoryview(data)
        pos = offset
        while pos < end:
            idx = pos // CHUNK
            start = idx * CHUNK
            stop = min(start + CHUNK, end)
            if pos == start and stop - start == CHUNK and idx not in self.chunks:
                self.chunks[idx] = bytearray(src[pos - offset:stop - offset])
            else:
                self._chunk(fd, idx)[pos - start:stop - start] = src[pos - offset:stop - offset]
            pos = stop
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        self.log.append(Truncate(size))
        if size < self.size:
            first_gone = -(-size // CHUNK)
            for idx in [i for i in self.chunks if i >= first_gone]:
                del self.chunks[idx]
            edge = self.chunks.get(size // CHUNK)
            if edge is not None:
                cut = size % CHUNK
                edge[cut:] = bytes(CHUNK - cut)
            self.base_limit = min(self.base_limit, size)
        self.size = size

    def sync(self, fd: int) -> None:
        """fsync: make every logged op durable on the backing file."""
        apply_ops(fd, self.log)
        self.log.clear()
        if not self.lost:
            # The backing file now equals what readers see.
            self.chunks.clear()
            self.base_limit = self.size

    def drop_unsynced(self) -> int:
        """A failed fsync: the ops it covered never become durable (readers
        still see them until the mount goes). Returns how many were lost."""
        n = len(self.log)
        if n:
            self.log.clear()
            self.lost = True
        return n
