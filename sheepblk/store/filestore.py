"""What every file-per-object backend shares: the directory layout, dirty
tracking for cached writes, flush, format and space.

`plain` and `farm` keep one file per object at STORE_DIR/obj/<16 hex
digits>, `tree` in subdirectories of obj/ (see tree.py); all keep stale
copies in obj/.stale/ and half-made creations in obj/.tmp/. They differ
only in where an object's file sits (`_dir_of`) and how its bytes sit in
it.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TypeVar

from ..proto import oid_name
from .backend import ObjectStore
from .errors import NoObject, NoSpace, StoreError, StoreIOError

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# The fsyncs of one flush run side by side: the file system commits
# concurrent syncs in one journal transaction (ext4's jbd2 does), measured
# 3-5x faster here for 32 dirty files than one after another.
SYNC_THREADS = 8
_sync_pool: ThreadPoolExecutor | None = None
_sync_pool_lock = threading.Lock()

T = TypeVar("T")


def sync_all(items: Sequence[T], sync: Callable[[T], None]) -> list[tuple[T, Exception]]:
    """Run `sync` on every item, side by side; the items whose sync
    raised OSError or StoreError, with the error. Every item is tried."""
    global _sync_pool
    if len(items) <= 1:
        failed: list[tuple[T, Exception]] = []
        for item in items:
            try:
                sync(item)
            except (OSError, StoreError) as e:
                failed.append((item, e))
        return failed
    with _sync_pool_lock:
        if _sync_pool is None:
            _sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="sync")
        pool = _sync_pool
    futures = [(item, pool.submit(sync, item)) for item in items]
    out: list[tuple[T, Exception]] = []
    for item, fut in futures:
        err = fut.exception()
        if isinstance(err, (OSError, StoreError)):
            out.append((item, err))
        elif err is not None:
            raise err
    return out


def _fdatasync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed since: nothing to make durable
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make the entries of directory `path` durable (names created,
    renamed in or removed)."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _DirRound:
    """One round of shared directory fsyncs (FileStore._fsync_dir_shared):
    the directories its callers named, and how it went."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()
        self.done = False
        self.error: Exception | None = None


def store_error(e: OSError, what: str) -> StoreError:
    """The typed store error for an OSError (ENOENT, ENOSPC, the rest)."""
    if e.errno == errno.ENOENT:
        return NoObject(what)
    if e.errno in _SPACE_ERRNOS:
        return NoSpace(f"{what}: {e.strerror}")
    return StoreIOError(f"{what}: {e.strerror or e}")


# The most one pwrite of ours writes.
WRITE_CHUNK = 128 << 10


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset`, in pieces that end on multiples of
    WRITE_CHUNK in the file.

    Why in pieces: the kernel (ext4 with large folios, Linux 6.x) sizes a
    page-cache folio by the write that creates it, so a whole object
    written at once lands in 2 MiB folios, and every later 4 KiB write
    into one walks all 512 of its block heads: 4-5x the CPU of the same
    write into a 128 KiB folio, and a VM's random writes are most of what
    a store does. A 4 MiB object costs the same in 32 calls as in one.
    Why on multiples in the file, not of the write: a piece boundary
    inside a sector would let a crash that keeps one piece and loses the
    next tear that sector, which no disk does."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view[:WRITE_CHUNK - offset % WRITE_CHUNK], offset)
        view = view[n:]
        offset += n


class FileStore(ObjectStore):
    """Resource handling: owns the obj/ directory tree under `root`; leftovers
    of a crash in obj/.tmp/ are removed when the store opens.
    Error handling: OSErrors become StoreError subclasses via store_error."""

    obj_dir: Path

    def __init__(self, root: str | os.PathLike[str], *, nosync: bool = False,
                 flat: bool = False) -> None:
        self.root = Path(root)
        # flat: `root` is itself the object directory, as each disk of a
        # Sheepdog node is (DISK/OID; a single-disk node's disk is STORE/obj)
        self.obj_dir = self.root if flat else self.root / "obj"
        self.stale_dir = self.obj_dir / ".stale"
        self.tmp_dir = self.obj_dir / ".tmp"
        self.nosync = nosync
        for d in (self.obj_dir, self.stale_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # half-made objects of a crash
            leftover.unlink(missing_ok=True)
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._dirty_dirs: set[str] = set()  # removals since the last flush
        self._tmp_seq = 0
        self._dir_cv = threading.Condition()  # shared directory fsyncs:
        self._dir_busy = False  # a round runs
        self._dir_next = _DirRound()  # the round new callers join

    def _dir_of(self, oid: int) -> str:
        """The directory an object's file lives in: obj/ itself here."""
        return str(self.obj_dir)

    def _object_dirs(self) -> list[str]:
        """Every directory `_dir_of` may answer."""
        return [str(self.obj_dir)]

    def _path(self, oid: int) -> str:
        return f"{self._dir_of(oid)}/{oid_name(oid)}"

    def _tmp_path(self, oid: int) -> str:
        """A fresh staging name for a creation (renamed over the object)."""
        with self._dirty_lock:
            self._tmp_seq += 1
            seq = self._tmp_seq
        return f"{self.tmp_dir}/{oid_name(oid)}.{os.getpid()}.{seq}"

    def exists(self, oid: int) -> bool:
        return os.path.exists(self._path(oid))

    def object_size(self, oid: int) -> int:
        """The file's size: an object file is created at its full size
        (ftruncate) and never shrinks. A backend whose files hold more
        than the bytes (farm) overrides this."""
        try:
            return os.stat(self._path(oid)).st_size
        except OSError as e:
            raise store_error(e, f"object {oid:016x}") from e

    def oids(self) -> Iterator[int]:
        for d in self._object_dirs():
            with os.scandir(d) as it:
                names = [e.name for e in it]
            for name in names:
                if len(name) == 16 and not name.startswith("."):
                    try:
                        yield int(name, 16)
                    except ValueError:
                        continue

    def _object_lock(self, oid: int) -> AbstractContextManager[object]:
        """Held while an object's file is replaced, removed or renamed. None
        here: a plain object's file is never swapped under a reader. The
        farm backend's requests read a chunk table and its chunks, so it
        serializes them per object."""
        return nullcontext()

    def _leaving(self, oid: int, *, keep: bool) -> None:
        """Hook, under the object's lock, before its file leaves obj/
        (`keep`: moved to .stale/, else removed): a backend with writes
        held back from the file (farm's pending entries) settles them."""

    def remove(self, oid: int) -> None:
        with self._object_lock(oid):
            self._leaving(oid, keep=False)
            try:
                os.unlink(self._path(oid))
            except OSError as e:
                raise store_error(e, f"remove {oid:016x}") from e
        if not self.nosync:
            self._mark_dirty(dir_of=self._dir_of(oid))

    def move_to_stale(self, oid: int, epoch: int) -> None:
        with self._object_lock(oid):
            self._leaving(oid, keep=True)
            try:
                os.rename(self._path(oid), self._stale_path(oid, epoch))
            except OSError as e:
                raise store_error(e, f"stale {oid:016x}") from e

    # ---- durability ----

    def _mark_dirty(self, path: str | None = None, *, dir_of: str | None = None) -> None:
        """Remember what a cached write left for the next flush: the file
        (data) and, for removals, the directory the name left."""
        with self._dirty_lock:
            if path is not None:
                self._dirty.add(path)
            if dir_of is not None:
                self._dirty_dirs.add(dir_of)

    def _created(self, path: str, *, sync: bool) -> None:
        """After an object file was renamed into place: its name is made
        durable now, for a cached create too; the data of a cached one
        waits for the next flush. Why the name at once: the write that
        makes an inode's index name this object goes to another file,
        maybe another node, and may reach its disk first; after a power
        cut the index would name no object, and reading it would fail
        where losing an unflushed write must leave the older bytes (zeros
        for a new object). Concurrent creations share one fsync."""
        if self.nosync:
            return
        self._fsync_dir_shared(os.path.dirname(path))
        if not sync:
            self._mark_dirty(path)

    def _fsync_dir_shared(self, d: str) -> None:
        """fsync directory `d` covering every rename into it made before
        the call. Callers that arrive while a round of fsyncs runs join
        the next round, which fsyncs every directory its callers named
        (group commit); a round that fails fails each of its callers."""
        with self._dir_cv:
            rnd = self._dir_next
            rnd.dirs.add(d)
            while not rnd.done:
                if self._dir_busy:
                    self._dir_cv.wait()
                    continue
                # Not busy and not done: `rnd` is the round to run now.
                self._dir_busy = True
                self._dir_next = _DirRound()
                self._dir_cv.release()
                try:
                    failed = sync_all(sorted(rnd.dirs), fsync_dir)
                    rnd.error = failed[0][1] if failed else None
                finally:
                    self._dir_cv.acquire()
                    self._dir_busy = False
                    rnd.done = True
                    self._dir_cv.notify_all()
        if rnd.error is not None:
            err = rnd.error
            if isinstance(err, OSError):
                raise store_error(err, f"fsync {d}") from err
            raise err

    def flush(self) -> None:
        """Make every cached write durable. Every dirty file is synced even
        after one fails, and a failure is raised, never put back for a
        later flush: after a failed fsync the kernel may have dropped the
        pages it could not write and marked them clean, so a retry would
        succeed without the data (PostgreSQL's "fsyncgate"). The caller
        must treat the copies as lost (MdStore drops the disk)."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        failed = [f"{path}: {getattr(e, 'strerror', None) or e}"
                  for path, e in sync_all(sorted(dirty), _fdatasync_path)]
        failed += [f"{d}: {getattr(e, 'strerror', None) or e}"
                   for d, e in sync_all(sorted(dirs), fsync_dir)]
        if failed:
            raise StoreIOError(f"flush failed for {len(failed)} file(s): {failed[0]}")

    # ---- the whole store ----

    def format(self) -> None:
        """Drop every object, stale copy and staging file. The files of
        every layout go, not only this backend's: a format that switches
        backend (plain <-> tree) must not leave the other's objects behind
        in obj/ or its subdirectories, unseen and never freed."""
        dirs = {str(self.obj_dir), *self._object_dirs()}
        with os.scandir(self.obj_dir) as it:
            dirs.update(e.path for e in it
                        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
        for d in [*dirs, str(self.stale_dir), str(self.tmp_dir)]:
            with os.scandir(d) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)
        with self._dirty_lock:
            self._dirty.clear()
            self._dirty_dirs.clear()
        if not self.nosync:
            for d, e in sync_all(sorted(dirs), fsync_dir):
                raise store_error(e, f"fsync {d}") if isinstance(e, OSError) else e

    def space(self) -> tuple[int, int]:
        st = os.statvfs(self.root)
        size = st.f_blocks * st.f_frsize
        return size, size - st.f_bavail * st.f_frsize
