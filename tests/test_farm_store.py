"""The farm backend on its own: same bytes as written at any offset,
compression at rest, atomic creation, copy-on-write, and corruption (a bit
flipped on disk in data or in the table) caught, never served."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from sheepblk.store import CorruptObject, FarmStore, NoObject
from sheepblk.store.farm_format import CHUNK_SIZE, CODEC_RAW, Entry, Header

MiB = 1 << 20
OBJ = 4 * MiB


def _read(s: FarmStore, oid: int, off: int, n: int) -> bytes:
    buf = memoryview(bytearray(n))
    s.read_into(oid, off, buf)
    return bytes(buf)


def _text(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    words = [b"sheep", b"dog", b"farm", b"object", b"trunk", b"\n", b"    "]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


def test_model_random_writes(tmp_path: Path) -> None:
    """Random partial writes (in-place, cross-chunk, unaligned) against a
    bytearray model."""
    s = FarmStore(tmp_path)
    model = bytearray(OBJ)
    s.create_and_write(7, OBJ, 100, memoryview(b"hello"), sync=True)
    model[100:105] = b"hello"
    rnd = random.Random(1)
    for i in range(200):
        n = rnd.choice([1, 4, 512, 4096, CHUNK_SIZE, 3 * CHUNK_SIZE + 17])
        off = rnd.randrange(0, OBJ - n)
        data = rnd.randbytes(n) if i % 3 == 0 else _text(n, i)
        s.write(7, off, memoryview(data), sync=i % 2 == 0)
        model[off:off + n] = data
        if i % 20 == 0:
            assert _read(s, 7, 0, OBJ) == model
    assert _read(s, 7, 0, OBJ) == model
    off = CHUNK_SIZE - 3
    assert _read(s, 7, off, 10) == model[off:off + 10]
    s.flush()


def test_compressed_and_sparse_at_rest(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    data = _text(OBJ)
    s.create_and_write(1, OBJ, 0, memoryview(data), sync=True)
    s.create_and_write(2, OBJ, 0, memoryview(b"x"), sync=True)  # nearly all zeros
    st1 = (tmp_path / "obj" / f"{1:016x}").stat()
    st2 = (tmp_path / "obj" / f"{2:016x}").stat()
    assert st1.st_blocks * 512 < OBJ // 2
    assert st2.st_blocks * 512 <= 16 * 1024
    assert _read(s, 1, 0, OBJ) == data


def test_inode_index_update_in_place_keeps_one_slot(tmp_path: Path) -> None:
    """A 4-byte update rewrites one chunk and gives the old slot back."""
    s = FarmStore(tmp_path)
    s.create_and_write(3, OBJ, 0, memoryview(_text(OBJ)), sync=True)
    before = (tmp_path / "obj" / f"{3:016x}").stat().st_blocks
    for i in range(50):
        s.write(3, 4096 + 4 * i, memoryview(i.to_bytes(4, "little")), sync=True)
    after = (tmp_path / "obj" / f"{3:016x}").stat().st_blocks
    assert after <= before + 8  # no slot left behind
    assert _read(s, 3, 4096, 8) == (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def test_cow_and_missing(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    base = _text(OBJ, 5)
    s.create_and_write(10, OBJ, 0, memoryview(base), sync=True)
    s.create_and_write(11, OBJ, 5000, memoryview(b"Z" * 10), cow_oid=10, sync=True)
    want = bytearray(base)
    want[5000:5010] = b"Z" * 10
    assert _read(s, 11, 0, OBJ) == want
    assert _read(s, 10, 0, OBJ) == base
    with pytest.raises(NoObject):
        _read(s, 99, 0, 10)
    with pytest.raises(NoObject):
        s.write(99, 0, memoryview(b"x"), sync=True)
    s.remove(11)
    assert not s.exists(11)
    assert sorted(s.oids()) == [10]


def _flip(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        b = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([b[0] ^ 0x10]), offset)
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["data", "entry", "header"])
def test_bit_flip_is_caught(tmp_path: Path, where: str) -> None:
    s = FarmStore(tmp_path)
    data = _text(OBJ, 9)
    s.create_and_write(20, OBJ, 0, memoryview(data), sync=True)
    path = tmp_path / "obj" / f"{20:016x}"
    head = Header.for_size(OBJ)
    if where == "data":
        _flip(path, head.slot_offset(2, 0) + 10)
    elif where == "entry":
        _flip(path, head.entry_offset(2) + 5)
    else:
        _flip(path, 12)
    with pytest.raises(CorruptObject):
        _read(s, 20, 2 * CHUNK_SIZE, 4096)
    # An untouched chunk still reads (for a data flip) or the whole object
    # is refused (table or header flip); never wrong bytes.
    try:
        got = _read(s, 20, 0, 4096)
    except CorruptObject:
        assert where != "data"
    else:
        assert got == data[:4096]
    # Repair: the whole object rewritten from a good copy.
    s.create_and_write(20, OBJ, 0, memoryview(data), sync=True)
    assert _read(s, 20, 0, OBJ) == data


def test_format_and_stale(tmp_path: Path) -> None:
    s = FarmStore(tmp_path)
    s.create_and_write(30, OBJ, 0, memoryview(b"a"), sync=False)
    s.move_to_stale(30, 4)
    assert (tmp_path / "obj" / ".stale" / f"{30:016x}.4").exists()
    s.create_and_write(31, OBJ, 0, memoryview(b"a"), sync=False)
    s.flush()
    s.format()
    assert list(s.oids()) == []


def test_raw_chunks_read_in_place_and_checked(tmp_path: Path) -> None:
    """Incompressible chunks (random, or shrinking by < 5%) are stored raw
    and read straight into the caller's buffer; a flipped bit in one is
    still refused, in a whole-chunk and in a partial read."""
    s = FarmStore(tmp_path)
    rnd = random.Random(5)
    data = bytearray(rnd.randbytes(OBJ))
    # Chunk 1: ~3% zeros, which zstd can squeeze a little: still raw.
    data[CHUNK_SIZE:CHUNK_SIZE + 2000] = bytes(2000)
    s.create_and_write(30, OBJ, 0, memoryview(data), sync=True)
    path = tmp_path / "obj" / f"{30:016x}"
    head = Header.for_size(OBJ)
    with open(path, "rb") as f:
        table = f.read(head.table_end)
    codecs = {Entry.unpack(table, i, head.entry_offset(i)).codec for i in range(3)}
    assert codecs == {CODEC_RAW}
    assert _read(s, 30, 0, OBJ) == data
    assert _read(s, 30, CHUNK_SIZE - 5, CHUNK_SIZE + 10) == data[CHUNK_SIZE - 5:2 * CHUNK_SIZE + 5]
    _flip(path, head.slot_offset(1, 0) + 77)
    for off, n in ((0, OBJ), (CHUNK_SIZE, CHUNK_SIZE), (CHUNK_SIZE + 4096, 4096)):
        with pytest.raises(CorruptObject):
            _read(s, 30, off, n)
    assert _read(s, 30, 2 * CHUNK_SIZE, CHUNK_SIZE) == data[2 * CHUNK_SIZE:3 * CHUNK_SIZE]
