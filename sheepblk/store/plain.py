"""The `plain` backend: one file per object under STORE_DIR/obj/.

Why files: the kernel's page cache, sparse files and rename() give us
caching, zero-filled holes and atomic creation for free. An object file is
named by its oid in 16 lower-case hex digits; a file shorter than the
object reads as zeros past its end. Objects this node no longer owns go to
obj/.stale/ (named OID.EPOCH) for recovery; creations are staged in
obj/.tmp/ so a crash leaves either the old object or the new one.
"""

from __future__ import annotations

import errno
import os

from ..proto.oid import is_ledger_obj, is_vdi_obj
from .errors import StoreError
from .filestore import FileStore, pwrite_all, store_error

# Zero runs of this granularity are left out of a created inode or ledger
# (Sheepdog's BLOCK_SIZE for trim_zero_blocks).
ZERO_BLOCK = 4096


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _copy_sparse(src: int, dst: int) -> None:
    """Copy only the data extents of `src` (holes stay holes)."""
    end = os.fstat(src).st_size
    pos = 0
    while pos < end:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        stop = os.lseek(src, start, os.SEEK_HOLE)
        off_in, off_out = start, start
        while off_in < stop:
            n = os.copy_file_range(src, dst, stop - off_in, off_in, off_out)
            if n == 0:
                break
            off_in += n
            off_out += n
        pos = stop


def trimmed(data: memoryview, offset: int) -> tuple[memoryview, int]:
    """`data` (to go at `offset`) without its leading and trailing
    all-zero ZERO_BLOCK-aligned blocks, and where the rest goes; empty
    when all zero. As C sheep's trim_zero_blocks: an inode is mostly
    zeros (an index of 4 MiB objects), and written whole it would take
    12 MiB of disk on every node that receives it by recovery."""
    raw = data.tobytes()
    head = len(raw) - len(raw.lstrip(b"\0"))
    if head == len(raw):
        return data[:0], offset
    tail = len(raw.rstrip(b"\0"))
    start = max(offset, (offset + head) // ZERO_BLOCK * ZERO_BLOCK)
    end = min(offset + len(raw), -(-(offset + tail) // ZERO_BLOCK) * ZERO_BLOCK)
    return data[start - offset:end - offset], start


class PlainStore(FileStore):
    """Resource handling: holds only a directory fd for directory fsyncs;
    every operation opens and closes its own file.
    Error handling: see ObjectStore; ENOENT on the object is NoObject."""

    name = "plain"
    cheap_small_io = True
    can_open_read = True

    # ---- reads ----

    def read_into(self, oid: int, offset: int, buf: memoryview) -> None:
        path = self._path(oid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise store_error(e, f"object {oid:016x}") from e
        try:
            got = 0
            total = len(buf)
            while got < total:
                n = os.preadv(fd, [buf[got:]], offset + got)
                if n == 0:
                    break
                got += n
            if got < total:
                buf[got:] = bytes(total - got)
        except OSError as e:
            raise store_error(e, f"read {oid:016x}") from e
        finally:
            os.close(fd)

    def open_read(self, oid: int) -> tuple[int, int]:
        """See ObjectStore.open_read: the object's own file, whose bytes
        are the object's."""
        try:
            fd = os.open(self._path(oid), os.O_RDONLY)
        except OSError as e:
            raise store_error(e, f"object {oid:016x}") from e
        try:
            return fd, os.fstat(fd).st_size
        except OSError as e:
            os.close(fd)
            raise store_error(e, f"object {oid:016x}") from e

    # ---- writes ----

    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        path = self._path(oid)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            raise store_error(e, f"object {oid:016x}") from e
        try:
            pwrite_all(fd, data, offset)
            if self.nosync:
                pass
            elif sync:
                os.fdatasync(fd)
            else:
                self._mark_dirty(path)
        except OSError as e:
            raise store_error(e, f"write {oid:016x}") from e
        finally:
            os.close(fd)

    def create_and_write(self, oid: int, size: int, offset: int, data: memoryview, *,
                         cow_oid: int = 0, sync: bool) -> None:
        tmp = self._tmp_path(oid)
        path = self._path(oid)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise store_error(e, f"create {oid:016x}") from e
        try:
            try:
                if cow_oid:
                    try:
                        src = os.open(self._path(cow_oid), os.O_RDONLY)
                    except OSError as e:
                        raise store_error(e, f"object {cow_oid:016x}") from e
                    try:
                        _copy_sparse(src, fd)
                    finally:
                        os.close(src)
                os.ftruncate(fd, size)
                if not cow_oid and (is_vdi_obj(oid) or is_ledger_obj(oid)):
                    # The file is all zeros yet: only the span that is not
                    # needs writing (the rest stays a hole, as C sheep's).
                    data, offset = trimmed(data, offset)
                pwrite_all(fd, data, offset)
                # A copy-on-write object is durable before its name, cached
                # or not: a name without the bytes would lose the source's
                # (flushed) data, not only this write.
                if (sync or cow_oid) and not self.nosync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as e:
            _discard(tmp)
            raise store_error(e, f"create {oid:016x}") from e
        except StoreError:
            _discard(tmp)
            raise
        self._created(path, sync=sync)

