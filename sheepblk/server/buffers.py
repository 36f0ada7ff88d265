"""A pool of reusable payload buffers.

Why: a fresh 4 MiB bytearray is fresh anonymous memory, and filling it
costs a page fault per 4 KiB; at a gigabyte per second that is most of the
CPU. Reusing buffers of the sizes clients actually send (4 MiB objects,
inode slices) keeps the data path free of faults and zeroing.
"""

from __future__ import annotations

import mmap
from collections import defaultdict
from typing import TypeAlias

# A fresh large buffer is an anonymous mapping, not a bytearray: the kernel
# gives its pages zeroed as they are first written, so a request that
# declares 64 MiB and sends 100 bytes costs one page, where bytearray(n)
# would zero (and so make resident) all of it.
PayloadBuffer: TypeAlias = bytearray | mmap.mmap

# Small payloads are cheap to allocate; huge ones are rare.
MIN_POOLED = 64 * 1024
MAX_POOLED = 16 << 20
# Upper bound of idle memory the pool may keep.
MAX_IDLE_BYTES = 32 << 20


class BufferPool:
    """Not thread-safe: used from the trio thread only."""

    def __init__(self, max_idle: int = MAX_IDLE_BYTES) -> None:
        self._free: dict[int, list[PayloadBuffer]] = defaultdict(list)
        self._idle = 0
        self.max_idle = max_idle

    def get(self, n: int) -> PayloadBuffer:
        """A buffer of exactly `n` bytes, contents undefined."""
        if n < MIN_POOLED:
            return bytearray(n)
        if n <= MAX_POOLED:
            free = self._free.get(n)
            if free:
                self._idle -= n
                return free.pop()
        return mmap.mmap(-1, n)

    def put(self, buf: PayloadBuffer) -> None:
        n = len(buf)
        if MIN_POOLED <= n <= MAX_POOLED and self._idle + n <= self.max_idle:
            self._free[n].append(buf)
            self._idle += n

    def statistics(self) -> dict[str, int]:
        return {"idle_bytes": self._idle, "sizes": len(self._free)}
