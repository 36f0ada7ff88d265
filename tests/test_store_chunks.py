"""pwrite_all writes an object in pieces of at most WRITE_CHUNK that end
on multiples of it in the file (filestore.py says why: the page-cache
folio a write creates is as large as the write, and a piece boundary
inside a sector could tear it in a crash), and every byte lands where it
belongs, whatever the offset and length."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sheepblk.store import filestore
from sheepblk.store.filestore import WRITE_CHUNK, pwrite_all


def test_a_large_write_goes_in_chunks_and_lands_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pieces: list[tuple[int, int]] = []
    real = os.pwrite

    def counting(fd: int, data: memoryview, offset: int) -> int:
        pieces.append((offset, len(data)))
        return real(fd, data, offset)

    monkeypatch.setattr(filestore.os, "pwrite", counting)
    data = os.urandom(3 * WRITE_CHUNK + 777)
    path = tmp_path / "obj"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        pwrite_all(fd, data, 5)
    finally:
        os.close(fd)
    sizes = [n for _, n in pieces]
    assert max(sizes) == WRITE_CHUNK and sum(sizes) == len(data)
    assert all((off + n) % WRITE_CHUNK == 0 for off, n in pieces[:-1])
    assert path.read_bytes() == bytes(5) + data
