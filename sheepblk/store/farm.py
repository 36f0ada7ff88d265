"""The `farm` backend: objects compressed with zstd and checksummed at rest.

Layout of one object file: see farm_format.py (64 KiB chunks, each in one
of two fixed slots of a sparse file, a CRC-32 per chunk and per entry).
Files live where the plain backend keeps them (STORE_DIR/obj/<16 hex>,
obj/.stale/, obj/.tmp/), so `dog node md info` and recovery see the same
paths.

How writes stay atomic per request:
- a write goes, chunk by chunk, to each chunk's spare slot, then each
  entry is flipped with one 16-byte pwrite; the old slots are punched
  afterwards. A chunk is old or new, never a mix (a torn request that
  spans chunks may leave some chunks new, as a disk's sectors would);
- every create builds a new file in obj/.tmp (untouched chunks of a
  copy-on-write source are copied as stored, without recompressing) and
  renames it over the old one.

How they stay crash-safe (what was flushed survives any power cut; a torn
write leaves old or new bytes, never a chunk that fails its checksum):
- the slot the on-disk entry names holds durable bytes and is never
  written over or punched before a newer slot and its entry are durable;
- a cached in-place write therefore writes the spare slot and keeps the
  new entry in memory ("pending"; reads see it); flush makes the slots
  durable, then writes the entries, makes them durable, and only then
  punches the slots they replaced. A sync write does the same at once;
- a new file is made durable before it is renamed in (a rename may reach
  the disk before the bytes of a file that was never synced).

Why a lock per object (striped): the in-place path reads, patches and
flips an entry, and punches the slot a concurrent reader might still be
reading; serialising the requests of one object keeps that simple, and
different objects never wait for each other (except on a stripe clash).

Error handling: as ObjectStore, plus CorruptObject when stored bytes fail
their checksum; the bytes are never served.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import zlib

import zstandard

from .errors import CorruptObject, NoObject, StoreError, StoreIOError
from .farm_format import (
    CODEC_RAW,
    CODEC_ZERO,
    CODEC_ZSTD,
    ENTRY_SIZE,
    HEADER_SIZE,
    Entry,
    FormatError,
    Header,
    unpack_table,
)
from .filestore import FileStore, pwrite_all, store_error, sync_all

# zstd level 1: ~3x the speed of the default level 3 on these 2-core
# machines for a few percent less compression of disk images.
ZSTD_LEVEL = 1
# Lock stripes: enough that unrelated objects rarely share one.
LOCK_STRIPES = 256
# A chunk zstd cannot shrink below this share of its size is stored raw
# (CODEC_RAW): already-compressed data (media, archives in an image) then
# reads with one pread and no decompression, for at most 5% of its space.
RAW_THRESHOLD = 0.95

_FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
def punch_hole(fd: int, offset: int, length: int) -> None:
    """Give the blocks of a byte range back to the filesystem. Best effort:
    a filesystem without hole punching only keeps the space."""
    if length > 0:
        _libc.fallocate(fd, _FALLOC_PUNCH, offset, length)


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    out = os.pread(fd, length, offset)
    while len(out) < length:
        more = os.pread(fd, length - len(out), offset + len(out))
        if not more:
            break
        out += more
    return out


class _Codec(threading.local):
    """zstd contexts are not thread-safe: one pair per I/O thread."""

    def __init__(self) -> None:
        self.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.d = zstandard.ZstdDecompressor()


_ZEROS = memoryview(bytes(1 << 20))  # sliced without a copy


def _is_zero(data: memoryview) -> bool:
    n = len(data)
    return data == _ZEROS[:n] if n <= len(_ZEROS) else not any(data)


def _preadv_exact(fd: int, dst: memoryview, offset: int) -> int:
    """Fill `dst` from `offset` (straight into the caller's buffer, no
    intermediate bytes); returns how many bytes were read (fewer at EOF)."""
    got = 0
    while got < len(dst):
        n = os.preadv(fd, [dst[got:]], offset + got)
        if not n:
            break
        got += n
    return got


class _Object:
    """One open object file: its header and table, read and checked.
    `durable` is the table as on disk; `table` adds the pending entries of
    cached writes (what reads must see)."""

    def __init__(self, fd: int, oid: int, pending: dict[int, Entry] | None = None) -> None:
        self.fd, self.oid = fd, oid
        try:
            raw = os.pread(fd, HEADER_SIZE, 0)
            self.head = Header.unpack(raw)
            table = _pread_exact(fd, self.head.table_end, 0)
            self.durable = unpack_table(table, self.head)
        except FormatError as e:
            raise CorruptObject(f"object {oid:016x}: {e}") from None
        self.table = list(self.durable)
        for idx, entry in (pending or {}).items():
            self.table[idx] = entry


class FarmStore(FileStore):
    """Resource handling: every operation opens and closes its own file;
    holds lock stripes and per-thread zstd contexts.
    Error handling: see the module docstring."""

    name = "farm"

    def __init__(self, root: str | os.PathLike[str], *, nosync: bool = False,
                 flat: bool = False) -> None:
        super().__init__(root, nosync=nosync, flat=flat)
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._codec = _Codec()
        # oid -> chunk -> entry written by a cached write, not yet on disk
        # (see the module docstring); changed under the object's lock.
        self._pending: dict[int, dict[int, Entry]] = {}
        self._pending_lock = threading.Lock()

    def _object(self, fd: int, oid: int) -> _Object:
        return _Object(fd, oid, self._pending.get(oid))

    def _stripe(self, oid: int) -> int:
        return (oid ^ (oid >> 32) ^ (oid >> 17)) % LOCK_STRIPES

    def _object_lock(self, oid: int) -> threading.Lock:
        return self._locks[self._stripe(oid)]

    def _open(self, oid: int, flags: int) -> int:
        try:
            return os.open(self._path(oid), flags)
        except OSError as e:
            raise store_error(e, f"object {oid:016x}") from e

    # ---- chunks ----

    def _load_chunk(self, obj: _Object, idx: int) -> bytes | None:
        """The chunk's bytes (None when all zero), checked against its CRC."""
        e = obj.table[idx]
        if e.codec == CODEC_ZERO:
            return None
        head = obj.head
        raw = _pread_exact(obj.fd, e.length, head.slot_offset(idx, e.slot))
        if len(raw) != e.length or zlib.crc32(raw) != e.crc:
            raise CorruptObject(f"object {obj.oid:016x} chunk {idx} fails its checksum")
        if e.codec == CODEC_RAW:
            return raw
        want = head.chunk_len(idx)
        try:
            out = self._codec.d.decompress(raw, max_output_size=want)
        except zstandard.ZstdError as err:
            raise CorruptObject(f"object {obj.oid:016x} chunk {idx}: {err}") from None
        if len(out) != want:
            raise CorruptObject(f"object {obj.oid:016x} chunk {idx}: wrong length")
        return out

    def _encode(self, data: memoryview) -> tuple[int, bytes | memoryview]:
        """(codec, bytes to store). A raw chunk is returned as the caller's
        view, not copied: it is written before the caller's buffer changes."""
        if _is_zero(data):
            return CODEC_ZERO, b""
        packed = self._codec.c.compress(data)
        if len(packed) >= len(data) * RAW_THRESHOLD:
            return CODEC_RAW, data
        return CODEC_ZSTD, packed

    def _patched(self, obj: _Object | None, idx: int, head: Header, offset: int,
                 data: memoryview) -> memoryview | None:
        """Chunk `idx` of `obj` (or zeros) with the part of `data` (written
        at object `offset`) that falls in it; None if `data` misses it."""
        lo = idx * head.chunk_size
        hi = lo + head.chunk_len(idx)
        a, b = max(lo, offset), min(hi, offset + len(data))
        if a >= b:
            return None
        if a == lo and b == hi:
            return data[a - offset:b - offset]
        old = self._load_chunk(obj, idx) if obj is not None else None
        buf = bytearray(old) if old is not None else bytearray(hi - lo)
        buf[a - lo:b - lo] = data[a - offset:b - offset]
        return memoryview(buf)

    # ---- reads ----

    def read_into(self, oid: int, offset: int, buf: memoryview) -> None:
        with self._object_lock(oid):
            fd = self._open(oid, os.O_RDONLY)
            try:
                self._read_locked(self._object(fd, oid), offset, buf)
            except OSError as e:
                raise store_error(e, f"read {oid:016x}") from e
            finally:
                os.close(fd)

    def _read_locked(self, obj: _Object, offset: int, buf: memoryview) -> None:
        head = obj.head
        end = offset + len(buf)
        if end > head.object_size:  # past the end reads as zeros, as plain
            cut = max(head.object_size - offset, 0)
            buf[cut:] = bytes(len(buf) - cut)
            end = offset + cut
        pos = offset
        while pos < end:
            idx = pos // head.chunk_size
            lo = idx * head.chunk_size
            n = min(lo + head.chunk_len(idx), end) - pos
            dst = buf[pos - offset:pos - offset + n]
            e = obj.table[idx]
            if e.codec == CODEC_RAW and pos == lo and n == e.length:
                # A whole raw chunk: read into `buf` and check it there.
                got = _preadv_exact(obj.fd, dst, head.slot_offset(idx, e.slot))
                if got != n or zlib.crc32(dst) != e.crc:
                    raise CorruptObject(
                        f"object {obj.oid:016x} chunk {idx} fails its checksum")
                pos += n
                continue
            chunk = self._load_chunk(obj, idx)
            if chunk is None:
                dst[:] = bytes(n)
            else:
                dst[:] = chunk[pos - lo:pos - lo + n]
            pos += n

    # ---- writes ----

    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        sync = sync and not self.nosync
        with self._object_lock(oid):
            fd = self._open(oid, os.O_RDWR)
            try:
                obj = self._object(fd, oid)
                head = obj.head
                if offset + len(data) <= head.object_size:
                    self._write_in_place(obj, offset, data, sync)
                    return
            except OSError as e:
                raise store_error(e, f"write {oid:016x}") from e
            finally:
                os.close(fd)
            # Several chunks: a new file, renamed over the old one.
            self._create_locked(oid, None, offset, data, sync=sync, base_oid=oid)

    def _write_in_place(self, obj: _Object, offset: int, data: memoryview,
                        sync: bool) -> None:
        """Each chunk the write touches goes to its spare slot; the new
        entries go on disk now (sync) or stay pending until a flush."""
        head, fd = obj.head, obj.fd
        first = offset // head.chunk_size
        last = (offset + max(len(data), 1) - 1) // head.chunk_size
        entries: dict[int, tuple[Entry, Entry]] = {}
        for idx in range(first, last + 1):
            new = self._patched(obj, idx, head, offset, data)
            if new is None:
                continue
            codec, blob = self._encode(new)
            durable = obj.durable[idx]
            slot = 1 - durable.slot  # never the slot the disk's entry names
            if blob:
                pwrite_all(fd, blob, head.slot_offset(idx, slot))
            entries[idx] = (Entry(slot, codec, len(blob), zlib.crc32(blob) if blob else 0),
                            durable)
        if not entries:
            return
        if sync or self.nosync:
            with self._pending_lock:
                pending = self._pending.get(obj.oid)
                if pending is not None:
                    for idx in entries:
                        pending.pop(idx, None)
                    if not pending:
                        del self._pending[obj.oid]
            self._commit(fd, head, entries, sync=sync)
            return
        with self._pending_lock:  # what flush settles (no per-file fsync needed)
            pending = self._pending.setdefault(obj.oid, {})
            for idx, (entry, _) in entries.items():
                pending[idx] = entry

    def _drop_pending(self, oid: int) -> None:
        with self._pending_lock:
            self._pending.pop(oid, None)

    @staticmethod
    def _commit(fd: int, head: Header, entries: dict[int, tuple[Entry, Entry]], *,
                sync: bool) -> None:
        """Put new entries on disk, each (new, replaced): their slots made
        durable first, then the entries, then the replaced slots punched."""
        if sync:
            os.fdatasync(fd)  # the bytes before the entries that name them
        for idx, (entry, _) in entries.items():
            pwrite_all(fd, entry.pack(idx), head.entry_offset(idx))
        if sync:
            os.fdatasync(fd)
        for idx, (entry, old) in entries.items():
            if old.codec != CODEC_ZERO and old.slot != entry.slot:
                punch_hole(fd, head.slot_offset(idx, old.slot), head.chunk_size)

    def _settle(self, oid: int) -> None:
        """Put an object's pending entries on disk (its lock held)."""
        with self._pending_lock:
            pending = self._pending.pop(oid, None)
        if not pending:
            return
        fd = self._open(oid, os.O_RDWR)
        try:
            obj = _Object(fd, oid)
            self._commit(fd, obj.head,
                         {idx: (e, obj.durable[idx]) for idx, e in pending.items()},
                         sync=not self.nosync)
        except OSError as e:
            raise store_error(e, f"flush {oid:016x}") from e
        finally:
            os.close(fd)

    def _settle_under_lock(self, oid: int) -> None:
        """One object of a flush, in a sync thread: the objects settle side
        by side (their fdatasyncs share journal commits), each under its
        own lock only, so writes to the others go on meanwhile."""
        with self._object_lock(oid):
            try:
                self._settle(oid)
            except NoObject:
                pass

    def _leaving(self, oid: int, *, keep: bool) -> None:
        if keep:
            self._settle(oid)
        else:
            self._drop_pending(oid)

    def flush(self) -> None:
        """Settle every object's pending entries, then sync the rest (see
        FileStore.flush); every object is tried even when one fails."""
        with self._pending_lock:
            oids = list(self._pending)
        failed = [str(e) for _, e in sync_all(oids, self._settle_under_lock)]
        try:
            super().flush()
        except StoreError as e:
            failed.append(str(e))
        if failed:
            raise StoreIOError(f"flush failed: {'; '.join(failed)}")

    def create_and_write(self, oid: int, size: int, offset: int, data: memoryview, *,
                         cow_oid: int = 0, sync: bool) -> None:
        sync = sync and not self.nosync
        stripes = sorted({self._stripe(oid), self._stripe(cow_oid) if cow_oid else -1} - {-1})
        for s in stripes:
            self._locks[s].acquire()
        try:
            self._create_locked(oid, size, offset, data, sync=sync, base_oid=cow_oid)
        finally:
            for s in reversed(stripes):
                self._locks[s].release()

    def _create_locked(self, oid: int, size: int | None, offset: int, data: memoryview, *,
                       sync: bool, base_oid: int) -> None:
        """Write a whole new file for `oid` in obj/.tmp and rename it in:
        the chunks of `base_oid` (or zeros) with `data` at `offset`.
        Chunks `data` does not touch are copied as stored."""
        src_fd = -1
        src: _Object | None = None
        if base_oid:
            src_fd = self._open(base_oid, os.O_RDONLY)
        try:
            if src_fd >= 0:
                src = self._object(src_fd, base_oid)
            if size is None:
                assert src is not None
                size = src.head.object_size
            head = Header.for_size(size)
            if src is not None and src.head != head:
                # A different layout: go through the bytes.
                full = memoryview(bytearray(min(size, src.head.object_size)))
                self._read_locked(src, 0, full)
                buf = bytearray(size)
                buf[:len(full)] = full
                buf[offset:offset + len(data)] = data
                src, offset, data = None, 0, memoryview(buf)
            self._build(oid, head, src, offset, data, sync)
        except OSError as e:
            raise store_error(e, f"create {oid:016x}") from e
        finally:
            if src_fd >= 0:
                os.close(src_fd)

    def _build(self, oid: int, head: Header, src: _Object | None, offset: int,
               data: memoryview, sync: bool) -> None:
        tmp = self._tmp_path(oid)
        path = self._path(oid)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.ftruncate(fd, head.slot_offset(head.nr_chunks, 0))
                table = bytearray(head.pack())
                for idx in range(head.nr_chunks):
                    new = self._patched(src, idx, head, offset, data)
                    if new is not None:
                        codec, blob = self._encode(new)
                        crc = zlib.crc32(blob) if blob else 0
                    elif src is not None:
                        e = src.table[idx]
                        codec, crc = e.codec, e.crc
                        blob = b""
                        if codec != CODEC_ZERO:
                            blob = _pread_exact(src.fd, e.length,
                                                head.slot_offset(idx, e.slot))
                            if zlib.crc32(blob) != crc or len(blob) != e.length:
                                raise CorruptObject(
                                    f"object {src.oid:016x} chunk {idx} fails its checksum")
                    else:
                        codec, blob, crc = CODEC_ZERO, b"", 0
                    if blob:
                        pwrite_all(fd, blob, head.slot_offset(idx, 0))
                    table += Entry(0, codec, len(blob), crc).pack(idx)
                assert len(table) == HEADER_SIZE + head.nr_chunks * ENTRY_SIZE
                pwrite_all(fd, table, 0)
                if not self.nosync:
                    os.fdatasync(fd)  # the bytes before the name, cached or not
            finally:
                os.close(fd)
            os.rename(tmp, path)
            self._drop_pending(oid)  # the new file holds every chunk
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._created(path, sync=sync)

    def read_stale(self, oid: int, epoch: int, buf: memoryview) -> None:
        try:
            fd = os.open(self._stale_path(oid, epoch), os.O_RDONLY)
        except OSError as e:
            raise store_error(e, f"stale {oid:016x}.{epoch}") from e
        try:
            self._read_locked(_Object(fd, oid), 0, buf)
        except OSError as e:
            raise store_error(e, f"stale {oid:016x}.{epoch}") from e
        finally:
            os.close(fd)

    def object_size(self, oid: int) -> int:
        """The logical size of a stored object (from its header)."""
        fd = self._open(oid, os.O_RDONLY)
        try:
            return self._object(fd, oid).head.object_size
        finally:
            os.close(fd)

    def stored_bytes(self) -> int:
        """Bytes the object files occupy on disk (holes excluded)."""
        total = 0
        with os.scandir(self.obj_dir) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
        return total
