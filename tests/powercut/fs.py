"""The pyfuse3 Operations of the power-cut file system, its faults and its
crash.

Durability model (what survives `crash`):

- file data and size: what the last successful fsync/fdatasync of that
  file covered (O_SYNC/O_DSYNC writes too: the kernel sends an fsync after
  each). Unsynced writes and truncates are kept in memory (data.py).
- names: what an fsync of a directory made durable (journal.py). An fsync
  of a file never makes its name durable: a new file needs its directory
  fsync'ed too, or it is gone after a crash.
- a failed fsync (injected EIO) behaves as Linux's: the writes it covered
  are dropped from the durable path for good (a later successful fsync
  does not bring them back; rewriting them does), the caller gets EIO,
  and readers of the mount still see those bytes until it goes, as they
  would in Linux's page cache. A failed directory fsync leaves its entry
  ops pending (a later directory fsync may still make them durable).
- mode and owner changes go to the backing file at once; times live in
  memory only. Not modelled: sync(2)/syncfs(2) (FUSE does not pass them
  on, so they make nothing durable here), fallocate (pyfuse3 has no
  handler, the kernel answers EOPNOTSUPP; farm's hole punching is best
  effort), xattrs, RENAME_EXCHANGE, device nodes. flock is the kernel's
  own (local) lock, released when its holder dies.
- the backing dir itself is not fsync'ed: it stands for the disk, and
  only our crash is simulated, not the host's.

`crash('all')` keeps the backing dir as the last durable state;
`crash('subset', seed)` first applies a random subset of the pending
writes (some torn to a page-aligned prefix) and entry ops that POSIX
allows after a power cut. Either way the mount then answers EIO to every
request until the process is restarted, so nothing can change "after the
power cut". A clean unmount is not a power cut: everything pending
becomes durable first, as umount writes the page cache back.

Error handling: only FUSEError leaves a handler (`_handler`): OSError
keeps its errno, anything else is logged and answered EIO.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import logging
import os
import random
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .data import apply_ops, choose_subset
from .nodes import Node
from .tree import Tree

log = logging.getLogger(__name__)

# The kernel may cache attributes and entries this long. Only we change
# the tree, through the kernel, so they stay right; a crash invalidates
# every inode it knows.
TTL = 5.0

P = ParamSpec("P")
T = TypeVar("T")


def _handler(
    fn: Callable[Concatenate[PowerCutOps, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[PowerCutOps, P], Coroutine[Any, Any, T]]:
    """A request that fails with EIO after a crash; errors as FUSEError."""

    @functools.wraps(fn)
    async def wrapper(self: PowerCutOps, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.crashed:
            raise FUSEError(errno.EIO)
        try:
            return await fn(self, *args, **kwargs)
        except FUSEError:
            raise
        except OSError as e:
            log.debug("%s: %s", fn.__name__, e)
            raise FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise FUSEError(errno.EIO) from None

    return wrapper


class CommandError(Exception):
    """A control command that cannot be done (bad arguments, crashed)."""


class PowerCutOps(pyfuse3.Operations):
    """Resource handling: owns the Tree (and through it every backing
    fd); `shutdown` flushes (unless crashed) and closes it."""

    enable_writeback_cache = False  # every write must reach us (see crash)

    def __init__(self, backing: str) -> None:
        super().__init__()
        self.backing = backing
        self.tree = Tree(backing)
        self.files: dict[int, Node] = {}
        self.dirs: dict[int, tuple[Node, list[tuple[bytes, Node]] | None]] = {}
        self.next_fh = 1
        self.crashed = False
        self.enospc = False
        self.fail_fsync_count = 0
        self.fail_fsync_pattern: str | None = None
        self.counters = {"writes": 0, "fsyncs": 0, "dir_fsyncs": 0, "failed_fsyncs": 0}

    # ---- helpers ----

    def _node(self, ino: int) -> Node:
        node = self.tree.nodes.get(ino)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.entry_timeout = a.attr_timeout = TTL
        a.st_mode = node.mode
        if node.is_dir and node.entries is not None:
            a.st_nlink = 2 + sum(1 for c in node.entries.values() if c.is_dir)
        else:
            a.st_nlink = node.nlink
        a.st_uid, a.st_gid = node.uid, node.gid
        a.st_size = node.size
        a.st_blksize = 4096
        a.st_blocks = self._blocks(node)
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = node.atime_ns, node.mtime_ns, node.ctime_ns
        return a

    def _blocks(self, node: Node) -> int:
        data = node.data
        if data is None:
            return 0
        if not data.chunks and not data.log:
            return os.fstat(node.bfd).st_blocks if node.bfd >= 0 else node.blocks
        return (data.size + 511) // 512

    def _looked_up(self, node: Node) -> pyfuse3.EntryAttributes:
        node.lookups += 1
        return self._attr(node)

    def _open(self, node: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        node.opens += 1
        self.files[fh] = node
        return fh

    def _fsync_fails(self, node: Node) -> bool:
        """Whether an injected EIO hits this fsync (and uses it up)."""
        if self.fail_fsync_count <= 0:
            return False
        pattern = self.fail_fsync_pattern
        if pattern is not None and not fnmatch.fnmatchcase(node.path(), pattern):
            return False
        self.fail_fsync_count -= 1
        self.counters["failed_fsyncs"] += 1
        log.info("injected EIO on fsync of %r", node.path())
        return True

    # ---- the namespace ----

    @_handler
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._looked_up(self.tree.child(self._node(parent_inode), name))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            node = self.tree.nodes.get(ino)
            if node is not None:
                node.lookups = max(0, node.lookups - n)
                if not self.crashed:
                    self.tree.maybe_free(node)

    @_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    @_handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        now = time.time_ns()
        if fields.update_size:
            if node.data is None:
                raise FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
            node.data.truncate(attr.st_size)
            node.mtime_ns = now
        if fields.update_mode or fields.update_uid or fields.update_gid:
            if fields.update_mode:
                node.mode = stat.S_IFMT(node.mode) | (attr.st_mode & 0o7777)
            if fields.update_uid:
                node.uid = attr.st_uid
            if fields.update_gid:
                node.gid = attr.st_gid
            self._apply_owner_mode(node)
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = now
        return self._attr(node)

    def _apply_owner_mode(self, node: Node) -> None:
        """Mode and owner go to the durable twin at once (not modelled)."""
        if node.is_file:
            fd = self.tree.file_fd(node)
        elif node.is_dir and (node.dfd >= 0 or node.home is not None):
            fd = self.tree.dir_fd(node)
        else:
            return  # a new directory gets them when its creation is durable
        os.fchmod(fd, node.mode & 0o7777)
        os.fchown(fd, node.uid, node.gid)

    @_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self._node(inode).target

    @_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            raise FUSEError(errno.EPERM)  # device nodes, fifos: not modelled
        node = self.tree.create(self._node(parent_inode), name, mode, ctx.uid, ctx.gid)
        return self._looked_up(node)

    @_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.mkdir(self._node(parent_inode), name, mode, ctx.uid, ctx.gid)
        return self._looked_up(node)

    @_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.symlink(self._node(parent_inode), name, target, ctx.uid, ctx.gid)
        return self._looked_up(node)

    @_handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.link(self._node(inode), self._node(new_parent_inode), new_name)
        return self._looked_up(node)

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.tree.remove(self._node(parent_inode), name, is_dir=False)

    @_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.tree.remove(self._node(parent_inode), name, is_dir=True)

    @_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self.tree.rename(self._node(parent_inode_old), name_old,
                         self._node(parent_inode_new), name_new, flags)

    # ---- files ----

    @_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self.tree.create(self._node(parent_inode), name, mode, ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=self._open(node)), self._looked_up(node)

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.data is None:
            raise FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
        # keep_cache: our bytes change only through the kernel, so its page
        # cache stays right across opens (a crash invalidates it).
        return pyfuse3.FileInfo(fh=self._open(node), keep_cache=True)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        node = self.files[fh]
        assert node.data is not None
        return node.data.read(self.tree.file_fd(node), off, size)  # type: ignore[return-value]

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if self.enospc:
            raise FUSEError(errno.ENOSPC)
        node = self.files[fh]
        assert node.data is not None
        node.data.write(self.tree.file_fd(node), off, buf)
        node.mtime_ns = node.ctime_ns = time.time_ns()
        self.counters["writes"] += 1
        return len(buf)

    async def flush(self, fh: int) -> None:
        pass  # close(2) promises nothing about durability

    async def release(self, fh: int) -> None:
        node = self.files.pop(fh, None)
        if node is not None:
            node.opens -= 1
            if not self.crashed:
                self.tree.maybe_free(node)

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self.files[fh]
        assert node.data is not None
        self.counters["fsyncs"] += 1
        if self._fsync_fails(node):
            node.data.drop_unsynced()
            raise FUSEError(errno.EIO)
        node.data.sync(self.tree.file_fd(node))

    # ---- directories ----

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        self.tree.entries(node)  # ENOTDIR, and loaded for readdir
        fh = self.next_fh
        self.next_fh += 1
        self.dirs[fh] = (node, None)
        return fh

    @_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node, listing = self.dirs[fh]
        if listing is None or start_id == 0:
            listing = list(self.tree.entries(node).items())
            self.dirs[fh] = (node, listing)
        for i in range(start_id, len(listing)):
            name, child = listing[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(child), i + 1):
                break
            child.lookups += 1

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        node = self.dirs[fh][0]
        self.counters["dir_fsyncs"] += 1
        if self._fsync_fails(node):
            raise FUSEError(errno.EIO)
        self.tree.fsync_dir(node)

    @_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.backing)
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                     "f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(st, name))
        return out

    # ---- control (control.py) ----

    def set_fail_fsync(self, count: int, pattern: str | None) -> None:
        """The next `count` fsyncs (of paths matching `pattern`, fnmatch on
        the path inside the mount, e.g. 'obj/*') fail with EIO."""
        self.fail_fsync_count, self.fail_fsync_pattern = count, pattern

    def set_enospc(self, on: bool) -> None:
        """Writes (only they) fail with ENOSPC while `on`."""
        self.enospc = on

    def stats(self) -> dict[str, Any]:
        dirty = [n for n in self.tree.nodes.values() if n.data is not None and n.data.log]
        return {
            "crashed": self.crashed,
            "enospc": self.enospc,
            "fail_fsync": self.fail_fsync_count,
            "pending_entry_ops": len(self.tree.journal),
            "dirty_files": len(dirty),
            "dirty_bytes": sum(n.data.dirty_bytes for n in dirty if n.data is not None),
            **self.counters,
        }

    async def crash(self, seed: int | None) -> dict[str, Any]:
        """The power cut (see the module doc): `seed` None drops every
        pending change, else a subset chosen by that seed is kept."""
        if self.crashed:
            raise CommandError("already crashed")
        self.crashed = True
        rng = None if seed is None else random.Random(seed)
        kept = dropped = torn = 0
        for node in sorted(self.tree.nodes.values(), key=lambda n: n.ino):
            if node.data is None or not node.data.log:
                continue
            ops, node.data.log = node.data.log, []
            if rng is not None:
                chosen, n_torn = choose_subset(ops, rng)
                apply_ops(self.tree.file_fd(node), chosen)
                kept, torn = kept + len(chosen), torn + n_torn
                dropped += len(ops) - len(chosen)
            else:
                dropped += len(ops)
        kept_ops, dropped_ops = self.tree.crash(rng)
        self.tree.clean_orphans()
        inos = list(self.tree.nodes)
        await trio.to_thread.run_sync(_invalidate, inos)
        summary = {"mode": "all" if seed is None else "subset", "seed": seed,
                   "kept_writes": kept, "dropped_writes": dropped, "torn_writes": torn,
                   "kept_entry_ops": kept_ops, "dropped_entry_ops": dropped_ops}
        log.info("crash: %s", summary)
        return summary

    def shutdown(self) -> None:
        """After unmount: a clean stop makes everything durable (unless
        crashed), then every backing fd is closed."""
        try:
            if not self.crashed:
                for node in self.tree.nodes.values():
                    if node.data is not None and node.data.log:
                        node.data.sync(self.tree.file_fd(node))
                self.tree.commit_all()
        finally:
            self.tree.close()


def _invalidate(inos: list[int]) -> None:
    """Drop the kernel's cached data and attributes of every inode (in a
    thread: the kernel may wait on requests this process must answer)."""
    for ino in inos:
        try:
            pyfuse3.invalidate_inode(ino, attr_only=False)
        except OSError:
            pass  # the kernel no longer knows it
