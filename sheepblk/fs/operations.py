"""The pyfuse3 Operations of sheepfs: the tree, handles and the FUSE boundary.

Layout (as Sheepdog's sheepfs, plus every VDI under volume/ on demand):

    cluster/info    `dog cluster info`            read-only, fresh per open
    node/list       `dog node list`               read-only, fresh per open
    node/info       `dog node info`               read-only, fresh per open
    vdi/list        `dog vdi list`                read-only, fresh per open
    vdi/mount       write NAME: attach; read: the attached VDIs
    vdi/unmount     write NAME: detach
    volume/NAME     the VDI's bytes, read-write, the VDI's size
    volume/NAME@TAG a snapshot (NAME@ID when untagged), read-only

Error handling: every handler runs inside `_boundary`, so only FUSEError
leaves: ClientError carries its errno, BadName is EINVAL, anything
unexpected is logged and reported as EIO. Blocking client calls run in
threads (trio.to_thread); status reads have a deadline so a halted or
unreachable cluster gives EIO quickly instead of a hung `cat`.

Volume reads: a sequential reader is served from whole objects fetched
ahead of it, and holes from shared zeros, both on the trio thread without a
thread hop or a copy (readahead.py); other reads go to the sheep in a
thread. Measured against the code before (bench/bench_sheepfs.py, 512 MiB,
2 cores, same run): dd iflag=direct x1.4-1.6, buffered x1.3-1.6.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..client import ClientError, SheepClient, SheepdogError
from ..client.aio import AsyncLink
from ..proto import Flag, InodeHeader, Res, vid_to_data_oid
from . import status
from .names import BadName, file_name, parse_control
from .readahead import Readahead
from .volumes import OpenVolume, VolumeError, Volumes, resolve

if TYPE_CHECKING:
    from ..metrics.frontend import FrontendMetrics

log = logging.getLogger(__name__)

# A status read or a lookup waits at most this long for the cluster, then
# fails with EIO: an unreachable sheep must not hang `cat` or `ls`.
STATUS_DEADLINE = 10.0
# Volume attributes may be cached this long by the kernel (sizes change
# only by `dog vdi resize`); status files are never cached.
VOLUME_TTL = 1.0
# Advertised I/O size: tools that size their buffers by st_blksize (cat,
# cp) then send requests as large as FUSE carries (1 MiB).
IO_BLKSIZE = 1 << 20
FIRST_VOLUME_INO = 1000
# Threads fetching objects ahead of sequential readers (readahead.py), for
# the whole mount: a window (AHEAD_OBJECTS) for two readers at once.
READAHEAD_THREADS = 6

T = TypeVar("T")
P = ParamSpec("P")


def _boundary(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn every error of a handler into FUSEError (see module doc), and
    count the handler in the mount's metrics when it keeps any (sheepfs
    --metrics): op is the handler's name, result "ok" or the errno's."""
    op = fn.__name__

    async def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except FUSEError:
            raise
        except BadName as e:
            log.info("%s: %s", op, e)
            raise FUSEError(errno.EINVAL) from None
        except ClientError as e:
            log.info("%s: %s", op, e)
            raise FUSEError(e.errno or errno.EIO) from None
        except status.StatusError as e:
            log.warning("%s: %s", op, e)
            raise FUSEError(errno.EIO) from None
        except OSError as e:
            log.info("%s: %s", op, e)
            raise FUSEError(e.errno or errno.EIO) from None
        except ValueError as e:
            log.info("%s: %s", op, e)
            raise FUSEError(errno.EINVAL) from None
        except Exception:
            log.exception("%s failed", op)
            raise FUSEError(errno.EIO) from None

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        meter = getattr(args[0], "meter", None)
        if meter is None:
            return await translated(*args, **kwargs)
        started = meter.start()
        try:
            out = await translated(*args, **kwargs)
        except BaseException as e:
            meter.done(op, started, error=e)
            raise
        meter.done(op, started, read=len(out) if op == "read" else 0,  # type: ignore[arg-type]
                   written=out if op == "write" else 0)
        return out

    return wrapper


@dataclass
class Node:
    """A fixed entry of the tree (directory, status or control file)."""

    ino: int
    parent: int
    name: str
    mode: int
    # For status files: how to produce the text (blocking, meta client).
    text: Callable[[SheepClient], str] | None = None
    children: dict[str, int] = field(default_factory=dict)


@dataclass
class StatusHandle:
    data: bytes


@dataclass
class ControlHandle:
    node: Node
    data: bytes = b""


@dataclass
class VolumeHandle:
    vol: OpenVolume
    write: bool
    ino: int


Handle = StatusHandle | ControlHandle | VolumeHandle


class SheepFs(pyfuse3.Operations):
    """The operations; `io` carries volume I/O, `meta` lookups and status
    (a separate pool with a short socket timeout)."""

    enable_writeback_cache = True
    supports_dot_lookup = False

    def __init__(self, io: SheepClient, meta: SheepClient,
                 meter: FrontendMetrics | None = None, *, uid: int | None = None,
                 gid: int | None = None) -> None:
        super().__init__()
        self.io = io
        self.meta = meta
        self.meter = meter  # sheepfs --metrics: counts every handler (_boundary)
        # Set while serving (see mount._serve): volume I/O inside one object
        # goes over it from the trio thread; everything else via threads.
        self.sheep_link: AsyncLink | None = None
        # fname -> (when, inode header) of recent volume lookups (getattr).
        self._resolved: dict[str, tuple[float, InodeHeader]] = {}
        self.volumes = Volumes(io)
        self.mount_time_ns = time.time_ns()
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        # fname -> (uid, gid, permission bits) a chown/chmod gave a volume
        # (libvirt hands an image to QEMU's user so); kept while mounted.
        self._volume_owner: dict[str, tuple[int, int, int]] = {}
        self.nodes: dict[int, Node] = {}
        self._build_tree()
        self._vol_ino: dict[str, int] = {}
        self._ino_vol: dict[int, str] = {}
        self._next_ino = itertools.count(FIRST_VOLUME_INO)
        self._handles: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)
        self._dir_handles: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self._readahead_pool = ThreadPoolExecutor(READAHEAD_THREADS,
                                                  thread_name_prefix="readahead")

    # ---- the fixed tree ----

    def _add(self, parent: int, name: str, mode: int,
             text: Callable[[SheepClient], str] | None = None) -> int:
        ino = len(self.nodes) + pyfuse3.ROOT_INODE
        self.nodes[ino] = Node(ino, parent, name, mode, text)
        if parent != ino:
            self.nodes[parent].children[name] = ino
        return ino

    def _build_tree(self) -> None:
        d = stat.S_IFDIR | 0o755
        ro = stat.S_IFREG | 0o444
        root = self._add(pyfuse3.ROOT_INODE, "", d)
        cluster = self._add(root, "cluster", d)
        node = self._add(root, "node", d)
        vdi = self._add(root, "vdi", d)
        self.volume_dir = self._add(root, "volume", d)
        self._add(cluster, "info", ro, status.gather_cluster_info)
        self._add(node, "list", ro, status.gather_node_list)
        self._add(node, "info", ro,
                  lambda c: status.gather_node_info(c, STATUS_DEADLINE / 2))
        self._add(vdi, "list", ro, status.gather_vdi_list)
        self.mount_node = self._add(vdi, "mount", stat.S_IFREG | 0o644)
        self.unmount_node = self._add(vdi, "unmount", stat.S_IFREG | 0o200)

    # ---- helpers ----

    async def _meta_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a metadata call in a thread, giving up with EIO at the deadline
        (the thread is left to finish against its socket timeout)."""
        with trio.move_on_after(STATUS_DEADLINE):
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        log.warning("the cluster did not answer within %.0fs", STATUS_DEADLINE)
        raise FUSEError(errno.EIO)

    def _attr(self, ino: int, mode: int, size: int = 0, nlink: int = 1,
              ns: int | None = None, ttl: float = 0.0) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino  # type: ignore[assignment]
        a.generation = 0
        a.entry_timeout = ttl
        a.attr_timeout = ttl
        a.st_mode = mode  # type: ignore[assignment]
        a.st_nlink = nlink
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_rdev = 0
        a.st_size = size
        a.st_blksize = IO_BLKSIZE
        a.st_blocks = -(-size // 512)
        t = self.mount_time_ns if ns is None else ns
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = t
        return a

    def _node_attr(self, node: Node) -> pyfuse3.EntryAttributes:
        if stat.S_ISDIR(node.mode):
            nlink = 2 + sum(1 for c in node.children.values()
                            if stat.S_ISDIR(self.nodes[c].mode))
            return self._attr(node.ino, node.mode, nlink=nlink, ttl=VOLUME_TTL)
        return self._attr(node.ino, node.mode)

    def _volume_ino(self, fname: str) -> int:
        ino = self._vol_ino.get(fname)
        if ino is None:
            ino = self._vol_ino[fname] = next(self._next_ino)
            self._ino_vol[ino] = fname
        return ino

    def _volume_attr(self, ino: int, hdr: InodeHeader,
                     vol: OpenVolume | None = None) -> pyfuse3.EntryAttributes:
        uid, gid, perm = self._volume_owner.get(self._ino_vol.get(ino, ""),
                                                (self.uid, self.gid, 0o644))
        if hdr.is_snapshot:
            perm &= 0o444
        ct = hdr.create_time
        ns = (ct >> 32) * 10**9 + (ct & 0xFFFFFFFF)
        size = vol.size if vol is not None else hdr.vdi_size
        a = self._attr(ino, stat.S_IFREG | perm, size=size, ns=ns or None, ttl=VOLUME_TTL)
        a.st_uid, a.st_gid = uid, gid
        return a

    def _retire(self, ino: int) -> None:
        """Give a volume a new inode number after a write past its end.

        Why: with the writeback cache the kernel grew its own i_size when the
        write entered the page cache, and it never takes a smaller size from
        us afterwards. Dropping the name and answering the next lookup with a
        fresh inode makes stat and new opens see the VDI's real size again;
        handles already open keep the old inode.
        """
        fname = self._ino_vol.get(ino)
        if fname is not None and self._vol_ino.get(fname) == ino:
            del self._vol_ino[fname]
            pyfuse3.invalidate_entry_async(self.volume_dir,  # type: ignore[arg-type]
                                           os.fsencode(fname), ignore_enoent=True)

    def _new_fh(self, h: Handle) -> int:
        fh = next(self._next_fh)
        self._handles[fh] = h
        return fh

    def _handle(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FUSEError(errno.EBADF)
        return h

    # ---- lookup and attributes ----

    @_boundary
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        try:
            text = os.fsdecode(name)
        except UnicodeError:
            raise FUSEError(errno.ENOENT) from None
        if parent_inode == self.volume_dir:
            try:
                _ref, hdr = await self._meta_call(resolve, self.meta, text)
                self._resolved[text] = (time.monotonic(), hdr)
            except BadName:
                raise FUSEError(errno.ENOENT) from None
            return self._volume_attr(self._volume_ino(text), hdr,
                                     self.volumes.get(hdr.vdi_id))
        parent = self.nodes.get(parent_inode)
        if parent is None or text not in parent.children:
            raise FUSEError(errno.ENOENT)
        return self._node_attr(self.nodes[parent.children[text]])

    @_boundary
    async def getattr(self, inode: int,
                      ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        node = self.nodes.get(inode)
        if node is not None:
            return self._node_attr(node)
        fname = self._ino_vol.get(inode)
        if fname is None:
            raise FUSEError(errno.ENOENT)
        hdr = await self._resolve_cached(fname)
        return self._volume_attr(inode, hdr, self.volumes.get(hdr.vdi_id))

    async def _resolve_cached(self, fname: str) -> InodeHeader:
        """The volume's inode header, at most VOLUME_TTL old: what the
        kernel may cache that long we may too. Why: with the writeback
        cache the kernel asks GETATTR before nearly every read of a volume,
        and each fresh answer costs two round trips to the sheep."""
        now = time.monotonic()
        hit = self._resolved.get(fname)
        if hit is not None and now - hit[0] < VOLUME_TTL:
            return hit[1]
        _ref, hdr = await self._meta_call(resolve, self.meta, fname)
        self._resolved[fname] = (time.monotonic(), hdr)
        return hdr

    @_boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """Only a no-op size change is allowed on a volume (a VDI keeps its
        size, like a block device: use `dd conv=notrunc`). Truncating a
        status or control file (shell `>`) is accepted and ignored.

        A volume's owner and mode change as a file's do (root may chown,
        the owner may chmod), in this mount's memory only: that is how
        libvirt gives a disk image to the user QEMU runs as."""
        current = await self.getattr(inode, ctx)
        fname = self._ino_vol.get(inode)
        if fields.update_size and fname is not None and attr.st_size != current.st_size:
            raise FUSEError(errno.EINVAL)
        if fname is None or not (fields.update_uid or fields.update_gid or fields.update_mode):
            return current
        uid = attr.st_uid if fields.update_uid else current.st_uid
        gid = attr.st_gid if fields.update_gid else current.st_gid
        perm = (attr.st_mode if fields.update_mode else current.st_mode) & 0o7777
        changes_owner = uid != current.st_uid or gid != current.st_gid
        if ctx.uid != 0 and (changes_owner or ctx.uid != current.st_uid):
            raise FUSEError(errno.EPERM)
        self._volume_owner[fname] = (uid, gid, perm)
        return await self.getattr(inode, ctx)

    @_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        try:
            res = await self._meta_call(self.meta.stat_sheep)
            st.f_blocks = res.store_size // 4096
            st.f_bfree = st.f_bavail = res.store_free // 4096
        except (FUSEError, ClientError):
            st.f_blocks = st.f_bfree = st.f_bavail = 0
        st.f_files = st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st

    # ---- directories ----

    @_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        entries: list[tuple[bytes, pyfuse3.EntryAttributes]] = []
        if inode == self.volume_dir:
            vdis = await self._meta_call(status.gather_vdis, self.meta, False)
            for hdr, _ in vdis:
                fname = file_name(hdr)
                if fname is not None:
                    ino = self._volume_ino(fname)
                    entries.append((os.fsencode(fname),
                                    self._volume_attr(ino, hdr, self.volumes.get(hdr.vdi_id))))
        else:
            node = self.nodes.get(inode)
            if node is None or not stat.S_ISDIR(node.mode):
                raise FUSEError(errno.ENOTDIR)
            for name, ino in node.children.items():
                entries.append((name.encode(), self._node_attr(self.nodes[ino])))
        entries.sort(key=lambda e: e[0])
        fh = next(self._next_fh)
        self._dir_handles[fh] = entries
        return fh

    @_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dir_handles.get(fh, [])
        for i in range(start_id, len(entries)):
            name, attr = entries[i]
            if not pyfuse3.readdir_reply(token, name, attr, i + 1):
                break

    @_boundary
    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    # ---- files ----

    @_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        if inode in self._ino_vol:
            return await self._open_volume(inode, write)
        node = self.nodes.get(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if stat.S_ISDIR(node.mode):
            raise FUSEError(errno.EISDIR)
        if node.text is not None:
            if write:
                raise FUSEError(errno.EACCES)
            text = await self._meta_call(node.text, self.meta)
            fh = self._new_fh(StatusHandle(text.encode()))
        elif node.ino == self.mount_node and not write:
            names = await trio.to_thread.run_sync(self.volumes.attached)
            fh = self._new_fh(StatusHandle("".join(n + "\n" for n in names).encode()))
        elif write:
            fh = self._new_fh(ControlHandle(node))
        else:
            raise FUSEError(errno.EACCES)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)  # type: ignore[arg-type]

    async def _open_volume(self, inode: int, write: bool) -> pyfuse3.FileInfo:
        fname = self._ino_vol[inode]
        vol, held_before = await trio.to_thread.run_sync(self.volumes.open, fname, write)
        if not held_before:
            vol.readahead = None  # the VDI was re-read: fetched bytes may be stale
        fh = self._new_fh(VolumeHandle(vol, write, inode))
        # The page cache stays valid only while this mount held the VDI
        # lock: otherwise another client may have written.
        return pyfuse3.FileInfo(fh=fh, direct_io=False,  # type: ignore[arg-type]
                                keep_cache=held_before)

    @_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        if isinstance(h, VolumeHandle):
            return await self._read_volume(h.vol, off, size)  # type: ignore[return-value]
        if isinstance(h, StatusHandle):
            return h.data[off:off + size]
        raise FUSEError(errno.EBADF)

    def _readahead(self, vol: OpenVolume) -> Readahead:
        ra = vol.readahead
        if ra is None:
            ra = vol.readahead = Readahead(
                self._readahead_pool, vol.vdi.object_size, vol.size,
                owner=lambda idx: vol.vdi.index[idx],
                pread_into=lambda: vol.vdi.pread_into)
        return ra

    async def _read_volume(self, vol: OpenVolume, off: int,
                           size: int) -> bytes | bytearray | memoryview:
        """Served from read-ahead (or a hole) on this thread when it can,
        else read from the sheep in a thread."""
        size = max(0, min(size, vol.size - off))
        if size == 0:
            return b""
        data = await self._readahead(vol).read(off, size)
        if data is not None:
            return data
        whole = await self._read_object(vol, off, size)
        if whole is not None:
            return whole
        return await trio.to_thread.run_sync(vol.pread, off, size)

    def _one_object(self, vol: OpenVolume, off: int, size: int) -> tuple[int, int] | None:
        """(object index, offset in it) when [off, off+size) lies inside one
        object of the volume and the async link is up, else None."""
        if self.sheep_link is None or size <= 0 or off < 0 or off + size > vol.size:
            return None
        idx, inner = divmod(off, vol.vdi.object_size)
        if inner + size > vol.vdi.object_size:
            return None
        return idx, inner

    async def _read_object(self, vol: OpenVolume, off: int, size: int) -> bytearray | None:
        """A read inside one allocated object, sent from this thread over
        the pipelined link (no thread hop); None for anything else (holes
        are the read-ahead's, several objects Vdi's)."""
        where = self._one_object(vol, off, size)
        if where is None:
            return None
        idx, inner = where
        owner = vol.vdi.index[idx]
        if not owner:
            return None
        assert self.sheep_link is not None
        buf = bytearray(size)
        await self.sheep_link.read_obj(vid_to_data_oid(owner, idx), inner, memoryview(buf))
        return buf

    async def _write_object(self, vol: OpenVolume, off: int, buf: bytes) -> int | None:
        """A write inside one object this VDI owns already, sent from this
        thread as Vdi.pwrite would send it; None when it needs more than
        that (allocation, copy-on-write, several objects, a snapshot taken
        meanwhile), which Volumes.write does in a thread."""
        where = self._one_object(vol, off, len(buf))
        if where is None or vol.read_only:
            return None
        idx, inner = where
        vdi = vol.vdi
        if vdi.index[idx] != vdi.vid:
            return None
        assert self.sheep_link is not None
        try:
            await self.sheep_link.write_obj(vid_to_data_oid(vdi.vid, idx), inner, buf,
                                      flags=Flag.CMD_CACHE if vdi.cache else 0)
        except SheepdogError as e:
            if e.result == Res.READONLY:  # snapshotted meanwhile: follow it
                return None
            raise
        vol.dirty = True  # after the write, as OpenVolume.pwrite marks it
        return len(buf)

    @_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        if isinstance(h, VolumeHandle):
            try:
                done = await self._write_object(h.vol, off, buf)
                if done is not None:
                    return done
                return await trio.to_thread.run_sync(self.volumes.write, h.vol, off, buf)
            except VolumeError as e:
                if e.errno == errno.ENOSPC:
                    self._retire(h.ino)
                raise
            finally:
                if h.vol.readahead is not None:
                    h.vol.readahead.invalidate(off, len(buf))
        if isinstance(h, ControlHandle):
            # Each write(2) of `echo NAME > vdi/mount` carries whole names.
            names = parse_control(buf)
            act = (self.volumes.attach if h.node.ino == self.mount_node
                   else self.volumes.detach)
            for name in names:
                await trio.to_thread.run_sync(act, name)
            return len(buf)
        raise FUSEError(errno.EBADF)

    @_boundary
    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        if isinstance(h, VolumeHandle) and h.write:
            await trio.to_thread.run_sync(h.vol.flush)

    @_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh)
        if isinstance(h, VolumeHandle):
            await trio.to_thread.run_sync(h.vol.flush)

    @_boundary
    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if isinstance(h, VolumeHandle):
            await trio.to_thread.run_sync(self.volumes.close, h.vol, h.write)

    @_boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        """VDIs are made with `dog vdi create` (a file has no size to give)."""
        raise FUSEError(errno.EPERM)

    # ---- end of mount ----

    async def flush_all(self) -> None:
        await trio.to_thread.run_sync(self.volumes.flush_all)

    def close_all(self) -> None:
        self._readahead_pool.shutdown(wait=True, cancel_futures=True)
        self.volumes.close_all()
