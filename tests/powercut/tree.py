"""The mount's namespace over the backing dir: loading, changing, and
applying entry ops to the backing dir when they become durable.

The backing dir holds exactly the durable state, plus one hidden
directory, `.powercut/` at its root, for files whose data exists but
whose name is not durable yet (a new file is born there, like an ext4
inode on the orphan list, and is linked into place when its creation
becomes durable). It is hidden from the mount and emptied at every start
and crash: after a power cut, a file no durable name reaches is gone.

Errors are OSError with the errno the caller of the mount should see
(ENOENT, EEXIST, ENOTEMPTY, ...); the FUSE layer passes them on.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import time

import pyfuse3

from .data import FileData
from .journal import EntryOp, Journal, Link, Rename, Unlink, trace
from .nodes import Node

ORPHANS = b".powercut"


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _node_from_stat(ino: int, st: os.stat_result) -> Node:
    return Node(ino=ino, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                nlink=st.st_nlink, blocks=st.st_blocks)


class Tree:
    """Resource handling: owns an fd of the backing root, of the orphan
    dir, and of every node's durable twin it opened; `close` frees them.
    Error handling: OSError propagates (see the module doc)."""

    def __init__(self, backing: str) -> None:
        self.root_fd = os.open(backing, os.O_RDONLY | os.O_DIRECTORY)
        self.clean_orphans()
        os.mkdir(ORPHANS, 0o700, dir_fd=self.root_fd)
        self.orphan_fd = os.open(ORPHANS, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.root_fd)
        root = _node_from_stat(pyfuse3.ROOT_INODE, os.fstat(self.root_fd))
        root.dfd = self.root_fd
        root.lookups = 1  # the kernel never forgets the root
        self.root = root
        self.nodes: dict[int, Node] = {root.ino: root}
        self.by_backing_ino: dict[int, Node] = {}  # hard links found in the backing dir
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.journal = Journal()

    # ---- loading ----

    def _new_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def entries(self, d: Node) -> dict[bytes, Node]:
        """The volatile entries of directory `d`, read from the backing
        dir the first time (nothing can be pending in a dir never seen)."""
        if d.entries is not None:
            return d.entries
        if not d.is_dir:
            raise _err(errno.ENOTDIR)
        dfd = self.dir_fd(d)
        entries: dict[bytes, Node] = {}
        for str_name in os.listdir(dfd):
            name = os.fsencode(str_name)
            if d is self.root and name == ORPHANS:
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            child = self.by_backing_ino.get(st.st_ino) if st.st_nlink > 1 else None
            if child is None or not stat.S_ISREG(st.st_mode):
                child = _node_from_stat(self._new_ino(), st)
                child.parent, child.name, child.home = d, name, (d, name)
                if stat.S_ISREG(st.st_mode):
                    child.data = FileData(st.st_size)
                    if st.st_nlink > 1:
                        self.by_backing_ino[st.st_ino] = child
                elif stat.S_ISLNK(st.st_mode):
                    child.target = os.fsencode(os.readlink(name, dir_fd=dfd))
                self.nodes[child.ino] = child
            entries[name] = child
        d.entries = entries
        return entries

    def child(self, d: Node, name: bytes) -> Node:
        if name == b".":
            return d
        if name == b"..":
            return d.parent or self.root
        node = self.entries(d).get(name)
        if node is None:
            raise _err(errno.ENOENT)
        return node

    def dir_fd(self, d: Node) -> int:
        """The fd of a directory's durable twin (it must have one)."""
        if d.dfd < 0:
            assert d.home is not None, f"directory {d.path()!r} has no durable twin"
            parent, name = d.home
            d.dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.dir_fd(parent))
        return d.dfd

    def file_fd(self, node: Node) -> int:
        """The fd of a file's backing file (opened on first use)."""
        if node.bfd < 0:
            assert node.home is not None, f"file {node.path()!r} has no backing file"
            parent, name = node.home
            node.bfd = os.open(name, os.O_RDWR | os.O_NOFOLLOW, dir_fd=self.dir_fd(parent))
        return node.bfd

    def pin(self, node: Node) -> None:
        """Open the durable twin before an entry op names the node: from
        then on `home` may go stale, the fd follows the backing file."""
        if node.is_file:
            self.file_fd(node)
        elif node.is_dir and node.dfd < 0 and node.home is not None:
            self.dir_fd(node)

    # ---- volatile changes (each recorded in the journal) ----

    def _check_new(self, d: Node, name: bytes) -> dict[bytes, Node]:
        entries = self.entries(d)
        if name in entries:
            raise _err(errno.EEXIST)
        if d is self.root and name == ORPHANS:
            raise _err(errno.EPERM)
        return entries

    def _add(self, d: Node, name: bytes, node: Node) -> Node:
        self._check_new(d, name)[name] = node
        node.parent, node.name = d, name
        self.nodes[node.ino] = node
        d.mtime_ns = d.ctime_ns = time.time_ns()
        self.journal.record(Link(d, name, node))
        return node

    def _blank(self, mode: int, uid: int, gid: int) -> Node:
        now = time.time_ns()
        return Node(ino=self._new_ino(), mode=mode, uid=uid, gid=gid,
                    atime_ns=now, mtime_ns=now, ctime_ns=now)

    def create(self, d: Node, name: bytes, mode: int, uid: int, gid: int) -> Node:
        self._check_new(d, name)
        node = self._blank(stat.S_IFREG | (mode & 0o7777), uid, gid)
        node.orphan = str(node.ino).encode()
        node.bfd = os.open(node.orphan, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o7777,
                           dir_fd=self.orphan_fd)
        os.fchown(node.bfd, uid, gid)
        node.data = FileData(0)
        return self._add(d, name, node)

    def mkdir(self, d: Node, name: bytes, mode: int, uid: int, gid: int) -> Node:
        self._check_new(d, name)
        node = self._blank(stat.S_IFDIR | (mode & 0o7777), uid, gid)
        node.entries, node.nlink = {}, 2
        return self._add(d, name, node)

    def symlink(self, d: Node, name: bytes, target: bytes, uid: int, gid: int) -> Node:
        self._check_new(d, name)
        node = self._blank(stat.S_IFLNK | 0o777, uid, gid)
        node.target = target
        return self._add(d, name, node)

    def link(self, node: Node, d: Node, name: bytes) -> Node:
        if not node.is_file:
            raise _err(errno.EPERM)
        self._check_new(d, name)
        self.pin(node)
        node.nlink += 1
        node.ctime_ns = time.time_ns()
        return self._add(d, name, node)

    def remove(self, d: Node, name: bytes, *, is_dir: bool) -> Node:
        node = self.child(d, name)
        if node.is_dir != is_dir:
            raise _err(errno.ENOTDIR if is_dir else errno.EISDIR)
        if is_dir and self.entries(node):
            raise _err(errno.ENOTEMPTY)
        self.pin(node)
        del self.entries(d)[name]
        node.nlink = 0 if is_dir else node.nlink - 1
        d.mtime_ns = d.ctime_ns = node.ctime_ns = time.time_ns()
        self.journal.record(Unlink(d, name, node))
        return node

    def rename(self, src: Node, sname: bytes, dst: Node, dname: bytes, flags: int) -> None:
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise _err(errno.EINVAL)  # RENAME_EXCHANGE: not modelled
        node = self.child(src, sname)
        old = self.entries(dst).get(dname)
        if old is node:
            return
        if old is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise _err(errno.EEXIST)
            if old.is_dir and not node.is_dir:
                raise _err(errno.EISDIR)
            if node.is_dir and not old.is_dir:
                raise _err(errno.ENOTDIR)
            if old.is_dir and self.entries(old):
                raise _err(errno.ENOTEMPTY)
        if dst is self.root and dname == ORPHANS:
            raise _err(errno.EPERM)
        self.pin(node)
        if old is not None:
            self.pin(old)
            old.nlink = 0 if old.is_dir else old.nlink - 1
        del self.entries(src)[sname]
        self.entries(dst)[dname] = node
        node.parent, node.name = dst, dname
        now = time.time_ns()
        src.mtime_ns = src.ctime_ns = dst.mtime_ns = dst.ctime_ns = node.ctime_ns = now
        self.journal.record(Rename(src, sname, dst, dname, node, old))

    # ---- durability ----

    def fsync_dir(self, d: Node) -> int:
        """fsync of directory `d`: apply what it makes durable; how many
        ops that was."""
        ops = self.journal.take_for_dir(d)
        for op in ops:
            self.apply(op)
        return len(ops)

    def commit_all(self) -> None:
        """A clean unmount: every pending entry op becomes durable."""
        for op in self.journal.take_all():
            self.apply(op)

    def crash(self, rng: random.Random | None) -> tuple[int, int]:
        """The power cut: keep a random subset of the pending ops (`rng`)
        or none; (kept, dropped). The tree is unusable afterwards."""
        kept: list[EntryOp]
        if rng is None:
            kept, dropped = [], self.journal.take_all()
        else:
            kept, dropped = self.journal.choose(rng)
        for op in dropped:
            trace("drop", op)
        for op in kept:
            self.apply(op)
        return len(kept), len(dropped)

    def apply(self, op: EntryOp) -> None:
        """Make one entry op durable in the backing dir."""
        trace("apply", op)
        for node in op.nodes():
            node.pins -= 1
        if isinstance(op, Link):
            self._apply_link(op.parent, op.name, op.node)
        elif isinstance(op, Unlink):
            fd = self.dir_fd(op.parent)
            if op.node.is_dir:
                os.rmdir(op.name, dir_fd=fd)
                self._close_dir(op.node)
            else:
                self._keep_alive(op.node)
                os.unlink(op.name, dir_fd=fd)
        else:
            if op.replaced is not None:
                self._keep_alive(op.replaced)
            os.rename(op.sname, op.dname, src_dir_fd=self.dir_fd(op.src),
                      dst_dir_fd=self.dir_fd(op.dst))
            if op.replaced is not None and op.replaced.is_dir:
                self._close_dir(op.replaced)
        for node in op.nodes():
            self.maybe_free(node)

    def _apply_link(self, d: Node, name: bytes, node: Node) -> None:
        fd = self.dir_fd(d)
        if node.is_dir:
            os.mkdir(name, node.mode & 0o7777, dir_fd=fd)
            node.dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.fchown(node.dfd, node.uid, node.gid)
        elif node.is_file:
            os.link(f"/proc/self/fd/{node.bfd}", name, dst_dir_fd=fd, follow_symlinks=True)
            if node.orphan is not None:
                os.unlink(node.orphan, dir_fd=self.orphan_fd)
                node.orphan = None
        else:
            os.symlink(node.target, name, dir_fd=fd)

    def _keep_alive(self, node: Node) -> None:
        """Before a file loses a durable name: if later pending ops still
        link it and this was its last name, park it in the orphan dir so
        they can (linkat needs a name; an fd alone is not enough)."""
        if (node.is_file and node.pins > 0 and node.orphan is None
                and os.fstat(node.bfd).st_nlink <= 1):
            node.orphan = str(node.ino).encode()
            os.link(f"/proc/self/fd/{node.bfd}", node.orphan, dst_dir_fd=self.orphan_fd,
                    follow_symlinks=True)

    def _close_dir(self, d: Node) -> None:
        if d.dfd >= 0 and d is not self.root:
            os.close(d.dfd)
        d.dfd = -1

    # ---- lifetime ----

    def maybe_free(self, node: Node) -> None:
        """Drop a node nothing refers to any more (no name, no lookup, no
        open handle, no pending op)."""
        if node.lookups or node.opens or node.nlink or node.pins or node is self.root:
            return
        self.nodes.pop(node.ino, None)
        if node.bfd >= 0:
            if node.orphan is not None:
                os.unlink(node.orphan, dir_fd=self.orphan_fd)
                node.orphan = None
            os.close(node.bfd)
            node.bfd = -1
        self._close_dir(node)

    def clean_orphans(self) -> None:
        """Empty and remove the orphan dir (at start and after a crash)."""
        try:
            fd = os.open(ORPHANS, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.root_fd)
        except FileNotFoundError:
            return
        try:
            for name in os.listdir(fd):
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(ORPHANS, dir_fd=self.root_fd)

    def close(self) -> None:
        """Close every fd; remove the orphan dir (only orphans are in it)."""
        for node in self.nodes.values():
            if node.bfd >= 0:
                os.close(node.bfd)
                node.bfd = -1
            self._close_dir(node)
        os.close(self.orphan_fd)
        self.clean_orphans()
        os.close(self.root_fd)
