"""sheepfs read-ahead (sheepblk/fs/readahead.py) against a VDI in memory.

No mount and no sheep: the object source is a bytearray with an index of
allocated objects, so the rules can be checked one by one (hits only
after a stream is seen, holes as zeros, a write drops what it overlaps,
a failed fetch falls back, buffers are never refilled while still handed
out).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio

from sheepblk.fs import readahead
from sheepblk.fs.readahead import Readahead

# The rules are checked at a small scale: 64 KiB objects, short streams.
pytestmark = pytest.mark.usefixtures("small_run")

OBJ = 64 * 1024
KIB = 1024


class FakeVdi:
    def __init__(self, objects: int, holes: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.data = bytearray(i % 251 for i in range(objects * OBJ))
        for idx in holes:
            self.data[idx * OBJ:(idx + 1) * OBJ] = bytes(OBJ)
        self.index = [0 if i in holes else 1 for i in range(objects)]
        self.fail = False
        self.reads: list[tuple[int, int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def pread_into(self, view: memoryview, off: int) -> None:
        self.gate.wait(10)
        self.reads.append((off, len(view)))
        if self.fail:
            raise OSError(5, "injected")
        view[:] = self.data[off:off + len(view)]


def make(vdi: FakeVdi, pool: ThreadPoolExecutor) -> Readahead:
    return Readahead(pool, OBJ, len(vdi.data), owner=lambda i: vdi.index[i],
                     pread_into=lambda: vdi.pread_into)


async def read(ra: Readahead, vdi: FakeVdi, off: int, size: int) -> bytes:
    """What sheepfs returns: read-ahead's bytes, else the VDI's own."""
    got = await ra.read(off, size)
    if got is None:
        return bytes(vdi.data[off:off + size])
    return bytes(got)


@pytest.fixture
def small_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "MIN_RUN", 16 * KIB)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as p:
        yield p


def test_sequential_reads_are_served_ahead(pool: ThreadPoolExecutor) -> None:
    vdi = FakeVdi(16)

    async def main() -> None:
        ra = make(vdi, pool)
        step = 16 * KIB
        for off in range(0, len(vdi.data), step):
            assert await read(ra, vdi, off, step) == vdi.data[off:off + step]
        st = ra.statistics()
        # Only the first reads (before the stream is seen) and the tail of
        # object 0 read then miss; everything after is served from memory.
        assert st.misses <= 4
        assert st.hits >= len(vdi.data) // step - 4
        # Whole objects were fetched, one request each.
        assert all(n == OBJ for off, n in vdi.reads if off % OBJ == 0)

    trio.run(main)


def test_random_reads_fetch_nothing(pool: ThreadPoolExecutor,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "STREAM_SLACK", 8 * KIB)
    vdi = FakeVdi(16)

    async def main() -> None:
        ra = make(vdi, pool)
        for off in (9 * OBJ, 2 * OBJ, 14 * OBJ + 100, 5 * OBJ, 9 * OBJ + 4 * KIB):
            assert await read(ra, vdi, off, 4 * KIB) == vdi.data[off:off + 4 * KIB]
        assert ra.statistics().fetched == 0 and vdi.reads == []

    trio.run(main)


def test_holes_read_as_zeros_without_fetching(pool: ThreadPoolExecutor) -> None:
    vdi = FakeVdi(8, holes={2, 3})

    async def main() -> None:
        ra = make(vdi, pool)
        for off in range(0, len(vdi.data), 32 * KIB):
            assert await read(ra, vdi, off, 32 * KIB) == vdi.data[off:off + 32 * KIB]
        assert ra.statistics().hole_hits == 4
        assert not any(2 * OBJ <= off < 4 * OBJ for off, _ in vdi.reads)

    trio.run(main)


def test_a_write_drops_what_it_overlaps(pool: ThreadPoolExecutor) -> None:
    vdi = FakeVdi(8)

    async def main() -> None:
        ra = make(vdi, pool)
        for off in range(0, 32 * KIB, 8 * KIB):
            await read(ra, vdi, off, 8 * KIB)  # a stream: objects 0..2 fetched
        await trio.sleep(0.2)
        # A write through the mount lands in object 1, then is dropped there.
        vdi.data[OBJ + 100:OBJ + 200] = b"w" * 100
        ra.invalidate(OBJ + 100, 100)
        for off in range(32 * KIB, 3 * OBJ, 16 * KIB):
            assert await read(ra, vdi, off, 16 * KIB) == vdi.data[off:off + 16 * KIB]

    trio.run(main)


def test_a_write_during_the_fetch_is_not_lost(pool: ThreadPoolExecutor) -> None:
    vdi = FakeVdi(8)

    async def main() -> None:
        ra = make(vdi, pool)
        await read(ra, vdi, 0, 16 * KIB)
        vdi.gate.clear()  # fetches of the stream hang
        await read(ra, vdi, 16 * KIB, 16 * KIB)
        assert ra.statistics().fetched
        vdi.data[OBJ:OBJ + 10] = b"new bytes!"
        ra.invalidate(OBJ, 10)
        vdi.gate.set()
        got = await read(ra, vdi, OBJ, 16 * KIB)
        assert got[:10] == b"new bytes!"

    trio.run(main)


def test_a_failed_fetch_falls_back_to_the_sheep(pool: ThreadPoolExecutor) -> None:
    vdi = FakeVdi(8)

    async def main() -> None:
        ra = make(vdi, pool)
        vdi.fail = True
        for off in range(0, 4 * OBJ, 16 * KIB):
            assert await ra.read(off, 16 * KIB) is None

    trio.run(main)


def test_buffers_are_reused_only_after_the_reply(pool: ThreadPoolExecutor,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "MAX_CHUNKS", 3)
    vdi = FakeVdi(32)

    async def main() -> None:
        ra = make(vdi, pool)
        handed: list[tuple[int, memoryview | bytes]] = []
        for off in range(0, len(vdi.data), 32 * KIB):
            got = await ra.read(off, 32 * KIB)
            if isinstance(got, memoryview):
                # pyfuse3 copies the reply before any other task runs: until
                # then its buffer must not be free for another fetch.
                assert not any(got.obj is b for b in ra._free)
                assert bytes(got) == vdi.data[off:off + 32 * KIB]
                handed.append((off, got))
            await trio.lowlevel.checkpoint()
        assert len(handed) > 20

    trio.run(main)
