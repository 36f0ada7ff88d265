"""Read-ahead of volume/ files: whole objects fetched ahead of sequential readers.

Why: a FUSE READ is served one at a time by `dd iflag=direct`, and two at
a time by the kernel's buffered readahead, so each 1 MiB request waited
for its own round trip to the sheep (~1.3 ms) on top of the FUSE path.
Once a reader is seen going forward, the next objects are read in
background threads, each in one 4 MiB request, and the READs that follow
are answered from memory on the trio thread: no thread hop, no copy (the
reply is a memoryview of the fetched object). Ranges inside a hole (an
unallocated object) are answered with shared zeros, also without a hop.

Rules (all state lives on the trio thread; fetch threads only fill their
own buffer, then hand the result back with `run_sync_soon`):
- a stream is a reader going forward: a read that starts within
  `STREAM_SLACK` of where an earlier one ended continues it; once a
  stream has read `MIN_RUN` bytes, each read fetches up to
  `AHEAD_OBJECTS` objects ahead of it (random reads fetch nothing);
- a write through this mount drops every fetched range it overlaps, once
  it has completed (a fetch that raced with it may hold old bytes);
- fetched bytes older than `MAX_AGE` are not served: when this mount does
  not hold the VDI's lock, someone elsewhere may write, so staleness is
  bounded as for the kernel's own readahead;
- a fetch that fails is dropped; the read then goes to the sheep itself,
  which reports the error.

Resource handling: at most `MAX_CHUNKS` objects' buffers per volume;
buffers are reused, but only from the next trio step after they were last
handed to pyfuse3 (which copies them into the kernel synchronously, before
any other task runs). The executor belongs to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import trio

log = logging.getLogger(__name__)

# Objects kept in flight ahead of a sequential reader: one 4 MiB object takes
# ~4 ms from a sheep on our 2-core machines while FUSE hands out 1 MiB in
# ~0.3 ms, so the fetches are the bottleneck; 4 MiB reads from one sheep
# gave 1.26 / 1.45 / 1.52 / 1.14 GB/s with 1 / 2 / 3 / 4 in flight.
AHEAD_OBJECTS = 3
# Distinct sequential readers followed per volume (least recent replaced).
MAX_STREAMS = 4
# Buffers per volume (4 MiB each): two streams' windows, each with the
# object being read and the one about to be fetched. When they are all
# taken, fetching waits: a fetched object is kept until it is read or
# expires, never dropped for another's (readers would take turns missing).
MAX_CHUNKS = 2 * (AHEAD_OBJECTS + 2)
# A read this close to where a stream ended continues it (a reader that
# skips a little, or two of the kernel's readahead requests served out of
# order); small, so random readers seldom look sequential.
STREAM_SLACK = 128 << 10
# Bytes a stream must have read before anything is fetched for it: a
# false start costs up to AHEAD_OBJECTS + 1 objects of reading.
MIN_RUN = 256 << 10
# Fetched bytes are served for this long at most (see module doc).
MAX_AGE = 2.0

PreadInto = Callable[[memoryview, int], None]


@dataclass
class Statistics:
    hits: int = 0
    hole_hits: int = 0
    waits: int = 0
    misses: int = 0
    fetched: int = 0
    dropped: int = 0


@dataclass(eq=False)
class _Chunk:
    start: int
    end: int
    buf: bytearray
    done: trio.Event = field(default_factory=trio.Event)
    ok: bool = False
    stale: bool = False  # dropped from the table: never served again
    served: int = 0
    t_done: float = 0.0


class Readahead:
    """The read-ahead state of one open volume (trio thread only).

    `pread_into(view, offset)` fills `view` from the VDI (blocking; run in
    `executor`), `owner(idx)` says whether object `idx` is allocated.
    """

    def __init__(self, executor: Executor, object_size: int, size: int,
                 owner: Callable[[int], int], pread_into: Callable[[], PreadInto]) -> None:
        self._executor = executor
        self._object_size = object_size
        self._size = size
        self._owner = owner
        self._pread_into = pread_into
        self._zeros = memoryview(bytes(object_size))
        self._chunks: dict[int, _Chunk] = {}
        # [where the reader's last read ended, bytes read in a row], most
        # recent first.
        self._streams: list[list[int]] = []
        self._free: list[bytearray] = []
        self._retired: list[bytearray] = []
        self._stats = Statistics()

    def statistics(self) -> Statistics:
        return self._stats

    # ---- the read path ----

    async def read(self, off: int, size: int) -> memoryview | bytes | None:
        """The bytes of [off, off+size) if a hole or a fetch has them (size
        already clipped to the volume), else None: the caller reads them
        from the sheep. Also starts fetches ahead of a sequential reader."""
        self._recycle()
        end = off + size
        sequential = self._follow(off, end)
        idx = off // self._object_size
        same_object = (end - 1) // self._object_size == idx
        if sequential:
            self._fetch_ahead(end)
        if same_object and not self._owner(idx):
            self._stats.hole_hits += 1
            return self._zeros[:size]
        chunk = self._chunks.get(idx)
        if chunk is None or not same_object or not chunk.start <= off:
            self._stats.misses += 1
            return None
        if not chunk.done.is_set():
            self._stats.waits += 1
            await chunk.done.wait()
        if not chunk.ok or chunk.stale or time.monotonic() - chunk.t_done > MAX_AGE:
            if not chunk.stale:
                self._drop(idx)
            self._stats.misses += 1
            return None
        self._stats.hits += 1
        chunk.served += size
        view = memoryview(chunk.buf)[off - chunk.start:end - chunk.start]
        if end == chunk.end:
            # The reader is done with this object.
            self._drop(idx)
        return view

    def _follow(self, off: int, end: int) -> bool:
        """Note a read; True if it continues a stream that ran MIN_RUN."""
        for i, stream in enumerate(self._streams):
            last, run = stream
            if -STREAM_SLACK <= off - last <= STREAM_SLACK:
                stream[0] = max(last, end)
                stream[1] = run + end - off
                if i:
                    self._streams.insert(0, self._streams.pop(i))
                return stream[1] >= MIN_RUN
        self._streams.insert(0, [end, end - off])
        del self._streams[MAX_STREAMS:]
        return False

    def _fetch_ahead(self, pos: int) -> None:
        """Start fetches of the rest of the object at `pos` and of the
        AHEAD_OBJECTS after it (allocated ones only)."""
        first = pos // self._object_size
        for idx in range(first, first + AHEAD_OBJECTS + 1):
            start = max(pos, idx * self._object_size)
            end = min((idx + 1) * self._object_size, self._size)
            if start >= end:
                return
            if idx in self._chunks or not self._owner(idx):
                continue
            if len(self._chunks) >= MAX_CHUNKS and not self._evict_expired():
                return
            self._start(idx, start, end)

    def _start(self, idx: int, start: int, end: int) -> None:
        buf = self._free.pop() if self._free else bytearray(self._object_size)
        chunk = self._chunks[idx] = _Chunk(start, end, buf)
        token = trio.lowlevel.current_trio_token()
        pread_into = self._pread_into()
        view = memoryview(buf)[:end - start]

        def job() -> None:
            ok = False
            try:
                pread_into(view, start)
                ok = True
            except Exception as e:  # noqa: BLE001 - the read retries and reports it
                log.debug("read-ahead at %d failed: %s", start, e)
            finally:
                view.release()
            try:
                token.run_sync_soon(self._finish, chunk, ok)
            except trio.RunFinishedError:
                pass

        try:
            self._executor.submit(job)
        except RuntimeError:  # executor shut down: the mount is ending
            del self._chunks[idx]
            return
        self._stats.fetched += 1

    def _finish(self, chunk: _Chunk, ok: bool) -> None:
        chunk.ok = ok
        chunk.t_done = time.monotonic()
        chunk.done.set()
        if chunk.stale:
            self._retired.append(chunk.buf)  # dropped while in flight

    # ---- dropping ----

    def _drop(self, idx: int) -> None:
        chunk = self._chunks.pop(idx)
        chunk.stale = True
        if chunk.served < chunk.end - chunk.start:
            self._stats.dropped += 1
        if chunk.done.is_set():
            self._retired.append(chunk.buf)
        # else its buffer is retired when the fetch ends (_finish)

    def _evict_expired(self) -> bool:
        """Drop the chunks nobody read in time; False if none was."""
        limit = time.monotonic() - MAX_AGE
        old = [i for i, c in self._chunks.items() if c.done.is_set() and c.t_done < limit]
        for idx in old:
            self._drop(idx)
        return bool(old)

    def _recycle(self) -> None:
        # Called at the start of a trio step: pyfuse3 has replied with every
        # buffer handed out before, so they may be filled again.
        if self._retired:
            self._free.extend(self._retired[:MAX_CHUNKS - len(self._free)])
            self._retired.clear()

    def invalidate(self, off: int, size: int) -> None:
        """Forget fetched bytes in [off, off+size) (after a write there)."""
        if not self._chunks:
            return
        first = off // self._object_size
        last = (off + max(size, 1) - 1) // self._object_size
        for idx in range(first, last + 1):
            if idx in self._chunks:
                self._drop(idx)

    def clear(self) -> None:
        """Forget everything (the VDI may have changed under us)."""
        for idx in list(self._chunks):
            self._drop(idx)
        self._streams.clear()
