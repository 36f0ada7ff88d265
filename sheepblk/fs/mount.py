"""Mount sheepfs: checks, the pyfuse3 session on trio, signals, shutdown.

Shutdown is the same however it starts (SIGTERM/SIGINT/SIGHUP, or
`fusermount3 -u` ending the session): dirty pages in the kernel's
writeback cache are written back first (syncfs, while the session still
serves requests), then every VDI written to is flushed and unlocked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyfuse3
import trio

from ..client import ClientError, SheepClient
from ..client.aio import AsyncLink
from ..client.pool import ConnectionPool
from .operations import STATUS_DEADLINE, SheepFs

if TYPE_CHECKING:
    from ..metrics.frontend import FrontendMetrics, MetricsServer

log = logging.getLogger(__name__)

# Connections for volume I/O: enough for the FUSE requests in flight (the
# kernel keeps up to max_background=12 by default, more with writeback)
# and Vdi's own fan-out of multi-object requests.
IO_POOL_SIZE = 32
META_POOL_SIZE = 4
# Socket timeout of lookups and status reads: a sheep that stopped
# answering fails them quickly; volume I/O keeps the client's default.
META_TIMEOUT = STATUS_DEADLINE / 2
# How long the kernel's dirty pages may take to reach us at shutdown.
SYNC_DEADLINE = 120.0
# Readahead of the mount's bdi. FUSE caps it at 128 KiB at INIT (pyfuse3
# cannot ask for more), which leaves buffered sequential reads at a third of
# what 1 MiB READ requests give; measured best at 1 MiB (one max-size
# request ahead) on our 2-core machines: 198 -> 589 MB/s.
READAHEAD_KB = 1024


class MountError(Exception):
    """A refusal to mount, with a one-line message for the user."""


class QuietDroppedReplies(logging.Filter):
    """pyfuse3 logs an error for a reply the kernel no longer waits for
    (ENOENT): the request was interrupted, or the mount is going away while
    an asynchronous RELEASE is being served, as at `fusermount3 -u` right
    after a close. Nothing is lost (the handler ran; the kernel has no use
    for the answer) and libfuse reports nothing then (fuse_send_msg skips
    ENOENT); sheepfs logs it at debug level, not as an error."""

    ENOENT = os.strerror(errno.ENOENT)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if (record.levelno == logging.ERROR and isinstance(record.msg, str)
                and record.msg.endswith("(): fuse_reply_* failed with %s") and len(args) == 1
                and (args[0].decode() if isinstance(args[0], bytes) else args[0]) == self.ENOENT):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET = QuietDroppedReplies()


@dataclass
class MountOptions:
    mountpoint: str
    host: str = "127.0.0.1"
    port: int = 7000
    allow_other: bool = False
    debug_fuse: bool = False
    # Who owns the files (--uid/--gid); None: the user who mounts.
    uid: int | None = None
    gid: int | None = None
    metrics: tuple[str, int] | None = None  # --metrics: where to serve them


def _mounted_paths() -> set[str]:
    paths = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                paths.add(fields[4].encode().decode("unicode_escape"))
    return paths


def check_mountpoint(path: str) -> str:
    """The absolute mount point; MountError if it is missing, not a
    directory, or already a mount point (ours or anyone's)."""
    path = os.path.abspath(path)
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountError(f"{path} is a dead FUSE mount: run `fusermount3 -u {path}` "
                             "first") from None
        raise MountError(f"cannot use {path} as mount point: {e.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"{path} is not a directory")
    if path in _mounted_paths() or os.path.ismount(path):
        raise MountError(f"{path} is already a mount point (is sheepfs mounted there? "
                         f"`fusermount3 -u {path}` to unmount)")
    return path


def _mount_device(path: str) -> str | None:
    """MAJOR:MINOR of the file system mounted at `path` (from mountinfo,
    so the mount itself is not touched before it is served)."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == path:
                found = fields[2]
    return found


def tune_readahead(path: str, kb: int = READAHEAD_KB) -> None:
    """Best effort (needs root and a writable sysfs): raise readahead."""
    dev = _mount_device(path)
    if dev is None:
        return
    try:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kb))
    except OSError as e:
        log.info("cannot set readahead of %s to %d KiB: %s", path, kb, e)


def check_cluster(host: str, port: int) -> None:
    """Fail early with a clear message if no sheep answers at host:port."""
    try:
        with SheepClient(host, port, pool=ConnectionPool(host, port, 1, META_TIMEOUT)) as c:
            c.node_list()
    except ClientError as e:
        raise MountError(f"cannot reach sheep at {host}:{port}: {e}") from None


def _fuse_options(opts: MountOptions) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add("fsname=sheepfs")
    options.add("subtype=sheepfs")
    if opts.allow_other:
        options.add("allow_other")
    if opts.debug_fuse:
        options.add("debug")
    return options


def syncfs(path: str) -> None:
    """syncfs(2) on the file system at `path`, without the GIL.

    Why not pyfuse3.syncfs: it keeps the GIL during the call, and the
    writeback it starts comes back to this very process as WRITE requests,
    which then can never be served (a deadlock). ctypes drops the GIL.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


async def _serve(fs: SheepFs, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        fs.sheep_link = AsyncLink(fs.io.pool.host, fs.io.pool.port, nursery)
        nursery.start_soon(_watch_signals, fs, mountpoint)
        nursery.start_soon(_after_init, mountpoint)
        try:
            await pyfuse3.main()
        finally:
            link, fs.sheep_link = fs.sheep_link, None
            await link.aclose()
        nursery.cancel_scope.cancel()


async def _after_init(mountpoint: str) -> None:
    """Raise readahead once the kernel has processed our INIT reply (which
    sets the bdi's readahead itself): a stat of the root is answered only
    after it."""
    await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    tune_readahead(mountpoint)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Signals that arrived after the mount was made but before trio's receiver
# existed: without this, SIGTERM in that window kills the process with the
# default action and leaves a dead mount behind.
_early_signals: list[int] = []


def _remember_signal(signum: int, _frame: object) -> None:
    _early_signals.append(signum)


async def _watch_signals(fs: SheepFs, mountpoint: str) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as sigs:
        signum = _early_signals[0] if _early_signals else await sigs.__anext__()
        log.info("signal %d: writing back and unmounting", signum)
        with trio.move_on_after(SYNC_DEADLINE):
            # Runs in a thread because the kernel's writeback comes back
            # to us as WRITE requests this loop must serve.
            await trio.to_thread.run_sync(syncfs, mountpoint,
                                          abandon_on_cancel=True)
        await fs.flush_all()
        pyfuse3.terminate()


def run(opts: MountOptions, ready: Callable[[str | None], None] | None = None) -> int:
    """Mount and serve until unmounted. `ready(None)` is called once the
    mount is up (or `ready(message)` if it failed), so a daemonizing parent
    can return only when the mount point is usable."""
    meter, server = _metrics(opts, ready)
    io = SheepClient(opts.host, opts.port, pool_size=IO_POOL_SIZE)
    meta = SheepClient(opts.host, opts.port,
                       pool=ConnectionPool(opts.host, opts.port, META_POOL_SIZE, META_TIMEOUT))
    fs = SheepFs(io, meta, meter, uid=opts.uid, gid=opts.gid)
    logging.getLogger("pyfuse3").addFilter(_QUIET)
    for sig in _STOP_SIGNALS:  # until trio's receiver takes over (_watch_signals)
        signal.signal(sig, _remember_signal)
    try:
        pyfuse3.init(fs, opts.mountpoint, _fuse_options(opts))
    except Exception as e:  # noqa: BLE001 - reported to the user as one line
        io.close()
        meta.close()
        if server is not None:
            server.close()
        msg = f"cannot mount {opts.mountpoint}: {e}"
        if ready:
            ready(msg)
        raise MountError(msg) from None
    if ready:
        ready(None)
    if server is not None:
        server.start()
    try:
        trio.run(_serve, fs, opts.mountpoint)
    except BaseException:
        log.exception("sheepfs stopped on an error")
        raise
    finally:
        try:
            fs.close_all()
        finally:
            pyfuse3.close(unmount=True)
            io.close()
            meta.close()
            if server is not None:
                server.close()
    return 0


def _metrics(opts: MountOptions, ready: Callable[[str | None], None] | None
             ) -> tuple[FrontendMetrics | None, MetricsServer | None]:
    """sheepfs --metrics: the counters and their endpoint, bound now (a
    port in use is a MountError naming it), served once the mount is up."""
    if opts.metrics is None:
        return None, None
    from ..metrics import MetricsListenError
    from ..metrics.frontend import FrontendMetrics, MetricsServer

    meter = FrontendMetrics("sheepblk_fs", "sheepfs")
    try:
        return meter, MetricsServer(*opts.metrics, meter.registry)
    except MetricsListenError as e:
        msg = e.strerror or str(e)
        if ready:
            ready(msg)
        raise MountError(msg) from None
