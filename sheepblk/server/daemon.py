"""The sheep daemon's top level: bind, join, serve, stop.

Graceful stop (SIGTERM/SIGINT, SHUTDOWN, KILL_NODE): stop accepting, leave
the cluster (the driver's own cleanup), flush cached writes, exit 0.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import trio

from ..cluster.driver import ClusterDriver
from ..metrics.http import open_metrics_listeners, serve_metrics
from ..store import ObjectStore, write_atomic
from . import admission, md_ops
from .conn import serve_stream
from .logs import FIELDS, reopen_logs
from .metrics import sheep_registry
from .node import Sheep
from .options import Options
from .transport import UNIX_SOCKET, SocketTransport, open_unix_listener

log = logging.getLogger("sheep")

# Present while the node runs; left behind by a crash or a power cut.
RUNNING_MARK = ".running"
# Connections one node serves at once (QEMU holds two per VM, nbdkit up to
# sixteen per export, each other node up to eight).
MAX_CONNECTIONS = 1000

async def _watch_signals(node: Sheep) -> None:
    """SIGTERM and SIGINT stop the node; SIGHUP reopens its log (logrotate)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                reopened = reopen_logs()
                log.info("got SIGHUP: reopened %d log file(s)", reopened)
                continue
            log.info("got signal %d, stopping", signum)
            node.stopped.set()
            return


def _version() -> str:
    try:
        return metadata.version("sheepblk")
    except metadata.PackageNotFoundError:
        return "unknown"


async def serve(opts: Options, store: ObjectStore, driver: ClusterDriver, *,
                ready: Callable[[], None] | None = None) -> str:
    """Run one sheep until it is told to stop. `ready` is called once the
    port is bound and the node has joined (the daemonising parent waits for
    it). Returns why the node left the cluster on a fault ("" for a stop
    it was asked for)."""
    node = Sheep(opts, store, driver)
    FIELDS.attach(node.key, lambda: node.epoch)
    refusal = node.start_refusal()
    if refusal:
        # As C sheep, whose parent returns once the store is locked and
        # whose daemon then checks its stored state: the start "succeeds"
        # and the daemon exits at once (Sheepdog's test 118 expects so).
        log.error("refusing to start: %s", refusal)
        if ready is not None:
            ready()
        return refusal
    running = opts.store_dir / RUNNING_MARK
    node.unclean = running.exists()
    if node.unclean:
        log.warning("the last run of this node did not stop cleanly")
    write_atomic(running, b"")
    await node.load_vdis()
    listeners = await trio.open_tcp_listeners(opts.port, host=opts.bindaddr)
    try:
        metrics_listeners = (await open_metrics_listeners(*opts.metrics)
                             if opts.metrics is not None else [])
    except OSError:
        for listener in listeners:
            await listener.aclose()
        raise
    unix_path: Path | None = opts.store_dir / UNIX_SOCKET
    try:
        listeners.append(open_unix_listener(opts.store_dir / UNIX_SOCKET))
    except OSError as e:  # a path too long for AF_UNIX, a file system without sockets
        log.warning("no unix socket at %s: %s", unix_path, e.strerror or e)
        unix_path = None
    # Sheepdog's first line names the daemon: scripts (its tests among
    # them) grep sheep.log for "daemon" to see that a node came up.
    log.info("sheepdog daemon (sheepblk %s) started", _version())
    log.info("listening on %s:%d%s, store %s, cluster driver %s, announced as %s",
             opts.bindaddr, opts.port, f" and {unix_path}" if unix_path else "", opts.store_dir,
             driver.name, node.me.nid)
    log.info("cluster administration (format, shutdown, kill...) taken from %s",
             admission.describe(opts.admin_from))

    open_conns = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal open_conns
        if open_conns >= MAX_CONNECTIONS:
            # Each connection holds a receive buffer and its requests'
            # payloads: past the cap a new one is closed at once, so a
            # client opening sockets without end cannot exhaust memory.
            log.warning("refusing a connection: %d are open", open_conns)
            await stream.aclose()
            return
        open_conns += 1
        node.stats.connections = open_conns
        try:
            t = SocketTransport(stream)
            await serve_stream(t, node, t.peer)
        finally:
            open_conns -= 1
            node.stats.connections = open_conns

    try:
        async with trio.open_nursery() as nursery:
            md_ops.install(node, nursery)
            if metrics_listeners:
                registry, collector = sheep_registry(node)
                nursery.start_soon(partial(serve_metrics, metrics_listeners, registry,
                                           refresh=collector.refresh))
            nursery.start_soon(_watch_signals, node)
            await nursery.start(node.peers.run)
            await nursery.start(node.run_cluster)
            accepting = trio.CancelScope()

            async def accept() -> None:
                with accepting:
                    await trio.serve_listeners(handler, listeners)

            nursery.start_soon(accept)
            if ready is not None:
                ready()
            await node.stopped.wait()
            # Stop accepting before closing the listeners: a listener closed
            # under a waiting accept fails it ("another task closed this fd").
            accepting.cancel()
            for listener in listeners:
                await listener.aclose()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(store.flush)
                if not node.failed:
                    running.unlink(missing_ok=True)  # a clean stop
            except Exception:
                log.exception("final flush failed")
            await node.peers.aclose()
            if unix_path is not None:
                unix_path.unlink(missing_ok=True)
        log.info("sheep stopped")
    return node.failed
