"""Multi-disk nodes: one node's objects spread over several directories.

`sheep /store,/disk1,/disk2` keeps its config and epochs in /store and its
objects on /disk1 and /disk2; `sheep /store` keeps everything in /store.
Each disk is a backend of its own (plain or farm) with its objects
directly in the disk's directory, as Sheepdog's (DISK/OID, DISK/.stale/);
a single-disk node's one disk is STORE/obj. An object's home disk is found by consistent
hashing over virtual disks as Sheepdog's md.c places them: a disk of S
bytes gets ceil(S / 1 GiB) vdisks at sd_hash(path), sd_hash_next(...), and
an oid lives on the first vdisk at or after sd_hash_oid(oid). So plugging
or unplugging a disk moves only the objects whose home changes.

Corruption: a CorruptObject from a disk's backend is passed on (EIO, so
the gateway reads another copy) after `on_corrupt(oid)` is told, so the
daemon can rewrite this copy from a good one.

Failure model (the node stays up): a disk whose directory vanished, or
that answers EIO, is dropped at once; `on_disk_lost` is told, so the
daemon can fetch the objects it held from other nodes. Reads of those
objects meanwhile answer EIO (the gateway then reads another copy); on a
single node they are lost and say so. A planned `unplug` of a readable
disk first copies its objects to their new homes: nothing is lost, and
the disk keeps its files, as Sheepdog's; a `plug` drops the object files
a disk holds before it takes any, so none of them is ever served again.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..proto import sd_hash, sd_hash_next, sd_hash_oid
from .backend import ObjectStore
from .errors import CorruptObject, DiskLost, NoObject, StoreError, StoreIOError

log = logging.getLogger("sheep.md")

# As Sheepdog: one virtual disk per GiB of space, so bigger disks take
# proportionally more objects.
VDISK_SIZE = 1 << 30
# At most this many disks per node (MD_MAX_DISK, the size of sd_md_info).
MAX_DISKS = 64

Factory = Callable[[str, Path], ObjectStore]


class DiskError(StoreError):
    """A plug/unplug request that cannot be done (unknown path, last disk,
    too many disks)."""


@dataclass
class Disk:
    path: Path  # as given on the command line / to `md plug`
    store: ObjectStore
    space: int

    @property
    def obj_dir(self) -> Path:
        """The backend's object directory (the disk itself for plain and farm)."""
        return self.store.obj_dir or self.path


def _space(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def _object_blocks(obj_dir: Path | str) -> int:
    """Bytes allocated to the objects (16-hex-digit names) in `obj_dir`
    and its subdirectories (the tree backend's), not in dot directories
    (.stale, .tmp), as Sheepdog's for_each_object_in_path counts."""
    return _object_usage(obj_dir)[1]


def _object_usage(obj_dir: Path | str) -> tuple[int, int]:
    """(objects, bytes allocated to them) in `obj_dir`, as _object_blocks counts."""
    count = total = 0
    with os.scandir(obj_dir) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                n, b = _object_usage(e.path)
                count, total = count + n, total + b
            elif len(e.name) == 16 and e.is_file(follow_symlinks=False):
                try:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
                    count += 1
                except FileNotFoundError:
                    pass
    return count, total


def _vdisk_hashes(disk: Disk) -> list[int]:
    hval = sd_hash(str(disk.path).encode())
    out = []
    for _ in range(max(1, -(-disk.space // VDISK_SIZE))):
        hval = sd_hash_next(hval)
        out.append(hval)
    return out


class MdStore(ObjectStore):
    """Resource handling: owns one backend per disk; a lock guards the disk
    set (readers take it briefly to pick a disk, never across I/O).
    Error handling: as ObjectStore; a broken disk becomes StoreIOError
    (EIO) for the objects it held, after the disk is dropped."""

    def __init__(self, disks: Sequence[Path], kind: str, factory: Factory, *,
                 on_disk_lost: Callable[[Path], None] | None = None,
                 on_corrupt: Callable[[int], None] | None = None) -> None:
        if not disks:
            raise ValueError("a node needs at least one disk")
        self.kind = kind
        self.factory = factory
        self.on_disk_lost = on_disk_lost
        self.on_corrupt = on_corrupt
        self._lock = threading.RLock()
        self.disks: list[Disk] = []
        self.lost: list[Path] = []  # disks dropped since start (for md info and logs)
        self._ring: list[tuple[int, int]] = []  # (hash, disk index)
        for p in disks:
            self._add(Path(p))
        self._rebuild()

    # ---- the disk set ----

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.kind

    @property
    def cheap_small_io(self) -> bool:  # type: ignore[override]
        """As cheap as the disks' backends (all of one kind)."""
        return all(d.store.cheap_small_io for d in self.all_disks())

    can_reopen = True

    def _open(self, path: Path) -> Disk:
        path.mkdir(parents=True, exist_ok=True)
        return Disk(path, self.factory(self.kind, path), _space(path))

    def _add(self, path: Path) -> Disk:
        disk = self._open(path)
        self.disks.append(disk)
        return disk

    def _rebuild(self) -> None:
        ring: list[tuple[int, int]] = []
        for i, d in enumerate(self.disks):
            ring.extend((h, i) for h in _vdisk_hashes(d))
        ring.sort()
        self._ring = ring
        self._hashes = [h for h, _ in ring]

    def home(self, oid: int) -> Disk:
        with self._lock:
            if len(self.disks) == 1:
                return self.disks[0]
            if not self.disks:
                raise StoreIOError("every disk of this node is broken")
            i = bisect.bisect_left(self._hashes, sd_hash_oid(oid))
            return self.disks[self._ring[i % len(self._ring)][1]]

    def all_disks(self) -> list[Disk]:
        with self._lock:
            return list(self.disks)

    def _others(self, disk: Disk) -> list[Disk]:
        with self._lock:
            return [d for d in self.disks if d is not disk]

    def healthy(self, disk: Disk) -> bool:
        return os.access(disk.obj_dir, os.R_OK | os.W_OK | os.X_OK)

    def drop(self, disk: Disk, why: str) -> None:
        """Forget a broken disk (idempotent) and tell the daemon."""
        with self._lock:
            if disk not in self.disks:
                return
            self.disks.remove(disk)
            self.lost.append(disk.path)
            self._rebuild()
        log.error("disk %s dropped (%s); the objects it held must come from other "
                  "nodes or are lost", disk.path, why)
        if self.on_disk_lost is not None:
            self.on_disk_lost(disk.path)

    def _check(self, disk: Disk, e: StoreError) -> StoreError:
        """Turn an error of `disk` into what the caller should see, dropping
        the disk if it is the disk (not the object) that failed."""
        if isinstance(e, StoreIOError) or not self.healthy(disk):
            self.drop(disk, str(e))
            return DiskLost(f"{e} (disk {disk.path} dropped)")
        return e

    def reopen(self, kind: str) -> None:
        """Switch every disk to another backend (cluster format -b); an
        unknown `kind` is the factory's error (ValueError of open_store)."""
        with self._lock:
            self.kind = kind
            for d in self.disks:
                d.store = self.factory(kind, d.path)

    # ---- finding objects off their home (after plug/unplug) ----

    def _elsewhere(self, oid: int, home: Disk) -> Disk | None:
        for d in self._others(home):
            if d.store.exists(oid):
                return d
        return None

    def _locate(self, oid: int) -> Disk:
        """The disk holding `oid`: its home, else any disk that has it."""
        home = self.home(oid)
        if home.store.exists(oid):
            return home
        return self._elsewhere(oid, home) or home

    def move(self, oid: int, src: Disk, dst: Disk, *, keep: bool = False) -> None:
        """Copy an object to another disk, then remove it from `src`
        (unless `keep`). A mostly-zero inode stays sparse: the
        backend's creation leaves its zero blocks out (plain's `trimmed`,
        farm's zero chunks), as Sheepdog's md_move_object does."""
        size = src.store.object_size(oid)
        buf = memoryview(bytearray(size))
        src.store.read_into(oid, 0, buf)
        dst.store.create_and_write(oid, size, 0, buf, sync=True)
        if not keep:
            src.store.remove(oid)

    def _on_home(self, oid: int, op: Callable[[ObjectStore], None]) -> None:
        """Run `op` on the disk holding `oid`: its home first (one try, no
        lookup, the common case), then any other disk that has it."""
        home = self.home(oid)
        try:
            op(home.store)
            return
        except CorruptObject:
            if self.on_corrupt is not None:
                self.on_corrupt(oid)
            raise
        except NoObject as e:
            other = self._elsewhere(oid, home)
            if other is None:
                raise self._check(home, e) from e
        except StoreIOError as e:
            raise self._check(home, e) from e
        try:
            op(other.store)
        except (NoObject, StoreIOError) as e:
            raise self._check(other, e) from e

    # ---- ObjectStore ----

    def read_into(self, oid: int, offset: int, buf: memoryview) -> None:
        self._on_home(oid, lambda s: s.read_into(oid, offset, buf))

    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        self._on_home(oid, lambda s: s.write(oid, offset, data, sync=sync))

    @property
    def can_open_read(self) -> bool:  # type: ignore[override]
        """Whether open_read works: every disk's store can (plain)."""
        return all(d.store.can_open_read for d in self.all_disks())

    def open_read(self, oid: int) -> tuple[int, int]:
        """The fd and file size of the object on the disk holding it (see
        ObjectStore.open_read)."""
        got: list[tuple[int, int]] = []
        self._on_home(oid, lambda s: got.append(s.open_read(oid)))
        return got[0]

    def object_size(self, oid: int) -> int:
        got: list[int] = []
        self._on_home(oid, lambda s: got.append(s.object_size(oid)))
        return got[0]

    def create_and_write(self, oid: int, size: int, offset: int, data: memoryview, *,
                         cow_oid: int = 0, sync: bool) -> None:
        disk = self.home(oid)
        if cow_oid:
            src = self._locate(cow_oid)
            if src is not disk:
                full = memoryview(bytearray(size))
                src.store.read_into(cow_oid, 0, full)
                full[offset:offset + len(data)] = data
                # Still a copy-on-write: the source's flushed bytes must be
                # durable before the new name, cached write or not.
                data, offset, cow_oid, sync = full, 0, 0, True
        try:
            disk.store.create_and_write(oid, size, offset, data, cow_oid=cow_oid, sync=sync)
        except (NoObject, StoreIOError) as e:
            raise self._check(disk, e) from e
        for d in self._others(disk):  # an older copy elsewhere must not come back
            if d.store.exists(oid):
                d.store.remove(oid)

    def remove(self, oid: int) -> None:
        self._locate(oid).store.remove(oid)

    def move_to_stale(self, oid: int, epoch: int) -> None:
        self._locate(oid).store.move_to_stale(oid, epoch)

    def stale_copies(self) -> Iterator[tuple[int, int]]:
        for d in self._others(None):  # type: ignore[arg-type]
            try:
                yield from d.store.stale_copies()
            except OSError as e:
                self.drop(d, str(e))

    def read_stale(self, oid: int, epoch: int, buf: memoryview) -> None:
        last: StoreError = NoObject(f"stale {oid:016x}.{epoch}")
        for d in self._others(None):  # type: ignore[arg-type]
            try:
                d.store.read_stale(oid, epoch, buf)
                return
            except StoreError as e:
                last = e
        raise last

    def remove_stale(self, oid: int, epoch: int) -> None:
        for d in self._others(None):  # type: ignore[arg-type]
            d.store.remove_stale(oid, epoch)

    def exists(self, oid: int) -> bool:
        return self._locate(oid).store.exists(oid)

    def oids(self) -> Iterator[int]:
        seen: set[int] = set()
        for d in self._others(None):  # type: ignore[arg-type]
            try:
                for oid in d.store.oids():
                    if oid not in seen:
                        seen.add(oid)
                        yield oid
            except OSError as e:
                self.drop(d, str(e))

    def flush(self) -> None:
        """Flush every disk; a disk whose flush fails is dropped (its cached
        writes may be gone, see FileStore.flush) and the flush fails with
        EIO: never a success for data that did not reach the disk."""
        failed = []
        for d in self._others(None):  # type: ignore[arg-type]
            try:
                d.store.flush()
            except StoreIOError as e:
                failed.append(str(e))
                self._check(d, e)
        if failed:
            raise StoreIOError("; ".join(failed))

    def format(self) -> None:
        for d in self._others(None):  # type: ignore[arg-type]
            d.store.format()

    def space(self) -> tuple[int, int]:
        size = used = 0
        seen: set[int] = set()
        for d in self._others(None):  # type: ignore[arg-type]
            try:
                dev = os.stat(d.path).st_dev
            except OSError:
                continue
            if dev in seen:  # disks on one filesystem share its space
                continue
            seen.add(dev)
            s, u = d.store.space()
            size, used = size + s, used + u
        return size, used

    # ---- plug / unplug (dog node md plug|unplug) ----

    def info(self) -> list[tuple[int, Path, int, int]]:
        """(index, object directory, free, used) of every disk, counted as
        Sheepdog's md_get_info does: free is the file system's room left,
        used the blocks of the objects on the disk (so `dog node md info`
        shows their sum as the disk's size, whatever else shares it)."""
        out = []
        disks = sorted(self._others(None), key=lambda d: str(d.path))  # type: ignore[arg-type]
        for i, d in enumerate(disks):  # by path, as Sheepdog's md.root
            try:
                st = os.statvfs(d.obj_dir)
                used = _object_blocks(d.obj_dir)
            except OSError:
                continue
            out.append((i, d.obj_dir, st.f_bavail * st.f_frsize, used))
        return out

    def usage(self) -> list[tuple[Path, int, int]]:
        """(disk, objects, bytes allocated to them) of every disk in use
        (the node's metrics; a walk of the disks, so not for a hot path)."""
        out = []
        for d in sorted(self._others(None), key=lambda d: str(d.path)):  # type: ignore[arg-type]
            try:
                n, used = _object_usage(d.obj_dir)
            except OSError:
                continue
            out.append((d.path, n, used))
        return out

    def _rebalance(self) -> int:
        """Move every object that is not on its home disk; returns how many."""
        moved = 0
        for d in self._others(None):  # type: ignore[arg-type]
            for oid in list(d.store.oids()):
                home = self.home(oid)
                if home is not d:
                    self.move(oid, d, home)
                    moved += 1
        return moved

    def plug(self, paths: Sequence[Path]) -> int:
        with self._lock:
            known = {d.path for d in self.disks}
            new = [Path(p) for p in paths if Path(p) not in known]
            if len(self.disks) + len(new) > MAX_DISKS:
                raise DiskError(f"at most {MAX_DISKS} disks per node")
        # A plugged disk starts empty, as Sheepdog's purges it: objects
        # there are what the node held when the disk left (since rewritten
        # or deleted), and must never be served or spread. Only object
        # files go; anything else in the directory is left alone.
        disks = [self._open(p) for p in new]
        for d in disks:
            for oid in list(d.store.oids()):
                d.store.remove(oid)
            for oid, epoch in list(d.store.stale_copies()):
                d.store.remove_stale(oid, epoch)
        with self._lock:
            self.disks.extend(disks)
            self._rebuild()
        return self._rebalance()

    def unplug(self, paths: Sequence[Path]) -> int:
        with self._lock:
            gone = [d for d in self.disks if d.path in {Path(p) for p in paths}]
            if len(gone) != len(set(paths)):
                raise DiskError("no such disk on this node")
            if len(gone) == len(self.disks):
                raise DiskError("cannot unplug every disk of a node")
            for d in gone:
                self.disks.remove(d)
            self._rebuild()
        moved = 0
        for d in gone:
            if not self.healthy(d):
                self.lost.append(d.path)
                if self.on_disk_lost is not None:
                    self.on_disk_lost(d.path)
                continue
            # copied, not moved: the unplugged disk keeps its files, as
            # Sheepdog's does (a plug purges them before any use)
            for oid in list(d.store.oids()):
                self.move(oid, d, self.home(oid), keep=True)
                moved += 1
        return moved
