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
import threading
from collections.abc import Iterator
from pathlib import Path

from ..proto import oid_name
from .backend import ObjectStore
from .errors import NoObject, NoSpace, StoreError, StoreIOError

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _store_error(e: OSError, what: str) -> StoreError:
    if e.errno == errno.ENOENT:
        return NoObject(what)
    if e.errno in _SPACE_ERRNOS:
        return NoSpace(f"{what}: {e.strerror}")
    return StoreIOError(f"{what}: {e.strerror or e}")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


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


class PlainStore(ObjectStore):
    """Resource handling: holds only a directory fd for directory fsyncs;
    every operation opens and closes its own file.
    Error handling: see ObjectStore; ENOENT on the object is NoObject."""

    name = "plain"
    cheap_small_io = True

    def __init__(self, root: str | os.PathLike[str], *, nosync: bool = False) -> None:
        self.root = Path(root)
        self.obj_dir = self.root / "obj"
        self.stale_dir = self.obj_dir / ".stale"
        self.tmp_dir = self.obj_dir / ".tmp"
        self.nosync = nosync
        for d in (self.obj_dir, self.stale_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # half-made objects of a crash
            leftover.unlink(missing_ok=True)
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._dir_dirty = False
        self._tmp_seq = 0

    def _path(self, oid: int) -> str:
        return f"{self.obj_dir}/{oid_name(oid)}"

    # ---- reads ----

    def read_into(self, oid: int, offset: int, buf: memoryview) -> None:
        path = self._path(oid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise _store_error(e, f"object {oid:016x}") from e
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
            raise _store_error(e, f"read {oid:016x}") from e
        finally:
            os.close(fd)

    def open_read(self, oid: int) -> tuple[int, int]:
        """A new fd of the object, open for reading (the caller closes it),
        and the file's size (bytes past it read as zeros)."""
        try:
            fd = os.open(self._path(oid), os.O_RDONLY)
        except OSError as e:
            raise _store_error(e, f"object {oid:016x}") from e
        try:
            return fd, os.fstat(fd).st_size
        except OSError as e:
            os.close(fd)
            raise _store_error(e, f"object {oid:016x}") from e

    def exists(self, oid: int) -> bool:
        return os.path.exists(self._path(oid))

    def oids(self) -> Iterator[int]:
        with os.scandir(self.obj_dir) as it:
            for entry in it:
                name = entry.name
                if len(name) == 16 and not name.startswith("."):
                    try:
                        yield int(name, 16)
                    except ValueError:
                        continue

    # ---- writes ----

    def _mark_dirty(self, path: str) -> None:
        with self._dirty_lock:
            self._dirty.add(path)

    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        path = self._path(oid)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            raise _store_error(e, f"object {oid:016x}") from e
        try:
            _pwrite_all(fd, data, offset)
            if self.nosync:
                pass
            elif sync:
                os.fdatasync(fd)
            else:
                self._mark_dirty(path)
        except OSError as e:
            raise _store_error(e, f"write {oid:016x}") from e
        finally:
            os.close(fd)

    def create_and_write(self, oid: int, size: int, offset: int, data: memoryview, *,
                         cow_oid: int = 0, sync: bool) -> None:
        with self._dirty_lock:
            self._tmp_seq += 1
            seq = self._tmp_seq
        tmp = f"{self.tmp_dir}/{oid_name(oid)}.{os.getpid()}.{seq}"
        path = self._path(oid)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise _store_error(e, f"create {oid:016x}") from e
        try:
            try:
                if cow_oid:
                    try:
                        src = os.open(self._path(cow_oid), os.O_RDONLY)
                    except OSError as e:
                        raise _store_error(e, f"object {cow_oid:016x}") from e
                    try:
                        _copy_sparse(src, fd)
                    finally:
                        os.close(src)
                os.ftruncate(fd, size)
                _pwrite_all(fd, data, offset)
                if sync and not self.nosync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as e:
            _discard(tmp)
            raise _store_error(e, f"create {oid:016x}") from e
        except StoreError:
            _discard(tmp)
            raise
        if self.nosync:
            return
        if sync:
            self._fsync_dir()
        else:
            self._mark_dirty(path)
            self._dir_dirty = True

    def _fsync_dir(self) -> None:
        dfd = os.open(self.obj_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def remove(self, oid: int) -> None:
        try:
            os.unlink(self._path(oid))
        except OSError as e:
            raise _store_error(e, f"remove {oid:016x}") from e
        if not self.nosync:
            self._dir_dirty = True

    def move_to_stale(self, oid: int, epoch: int) -> None:
        try:
            os.rename(self._path(oid), f"{self.stale_dir}/{oid_name(oid)}.{epoch}")
        except OSError as e:
            raise _store_error(e, f"stale {oid:016x}") from e

    def flush(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        for path in dirty:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # removed since: nothing to make durable
            except OSError as e:
                raise _store_error(e, f"flush {path}") from e
            try:
                os.fdatasync(fd)
            except OSError as e:
                raise _store_error(e, f"flush {path}") from e
            finally:
                os.close(fd)
        if dir_dirty:
            self._fsync_dir()

    def format(self) -> None:
        for d in (self.obj_dir, self.stale_dir, self.tmp_dir):
            with os.scandir(d) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
        with self._dirty_lock:
            self._dirty.clear()
        if not self.nosync:
            self._fsync_dir()

    def space(self) -> tuple[int, int]:
        st = os.statvfs(self.root)
        size = st.f_blocks * st.f_frsize
        return size, size - st.f_bavail * st.f_frsize
