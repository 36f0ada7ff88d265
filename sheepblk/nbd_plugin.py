"""nbdkit plugin: export one sheepblk (Sheepdog) VDI over NBD.

    nbdkit python sheepblk/nbd_plugin.py vdi=Alice [address=HOST[:PORT]]
           [snapshot=TAG|ID] [shared=true] [connections=N] [writeback=false]
           [metrics=[HOST:]PORT]

Parameters (unknown keys are refused; see also `python3 nbd_plugin.py --help`
or `help=1`, because nbdkit's Python plugin does not show a script's help):

vdi=NAME          (required) the VDI to export.
address=HOST[:PORT]  a sheep of the cluster (default 127.0.0.1:7000), or
                  unix:STORE/sock, the unix socket a sheep on this host
                  listens on in its store directory (cheaper per request).
snapshot=TAG|ID   export that snapshot of the VDI: read-only, no lock
                  (a snapshot never changes, so any number may export it).
shared=true       export without taking the VDI's lock, read-only: for
                  reading a VDI that someone else may hold (inspection,
                  backups). The allocation map is re-read for each new NBD
                  connection; objects the lock holder allocates later read as
                  zeros until then, so for a consistent copy of a VDI in use
                  take a snapshot and export that instead.
connections=N     protocol connections to the sheep, shared by every NBD
                  connection (default 16; nbdkit runs 16 threads per client).
writeback=BOOL    true (default): writes carry Sheepdog's cache flag and
                  NBD flush makes them durable on every copy, as QEMU's
                  cache=writeback does; false: every write is durable before
                  it is acknowledged.
metrics=[HOST:]PORT  serve Prometheus metrics of the export at
                  http://HOST:PORT/metrics (HOST defaults to 127.0.0.1):
                  sheepblk_nbd_requests_total{op,result}, latency, bytes.
                  Needs prometheus_client in nbdkit's Python (Debian:
                  python3-prometheus-client); without metrics= it is not
                  imported.

Without snapshot= or shared=true the export takes the VDI's exclusive lock at
start (a second export of the same VDI fails at start with "VDI is locked")
and releases it when nbdkit exits; `nbdkit -r` still takes it.

Why it is thin: the mapping of bytes onto 4 MiB objects, copy-on-write, the
index updates and the fan-out of large requests live in sheepblk.client, which
every frontend shares. This file parses options, opens the cluster before
nbdkit serves (so a bad name, an unreachable cluster or a held lock end nbdkit
at start with one line), and maps NBD callbacks onto Vdi methods.

Runs under the Python embedded in nbdkit (Debian's /usr/bin/python3), not our
virtualenv: sheepblk.client and sheepblk.proto are standard-library only, and
the package this file belongs to is put on sys.path (see _use_own_package).
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar


def _use_own_package() -> None:
    """Make `import sheepblk` find the package this file sits in.

    nbdkit runs this file as __main__ with the current directory on sys.path,
    so from the repository root the import already works; from elsewhere
    (`nbdkit python /src/sheepblk/sheepblk/nbd_plugin.py`) the repository
    root, this file's parent's parent, is added. From an installed package the
    root is site-packages, already on sys.path. A different `sheepblk` found
    first (an old install) would not match this file, so the root goes first.
    """
    here = globals().get("__file__")
    if not here:
        return
    pkg = Path(here).resolve().parent
    if not (pkg / "__init__.py").is_file():
        return
    spec = importlib.util.find_spec("sheepblk") if "sheepblk" not in sys.modules else None
    found = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if found != pkg and "sheepblk" not in sys.modules:
        sys.path.insert(0, str(pkg.parent))


_use_own_package()

from sheepblk.client import (  # noqa: E402
    ClientError,
    SheepClient,
    Vdi,
    address_text,
    parse_address,
)
from sheepblk.metrics import MetricsListenError, parse_endpoint  # noqa: E402

if TYPE_CHECKING:
    from sheepblk.metrics.frontend import FrontendMetrics, MetricsServer

try:  # nbdkit provides this module only to the script it runs
    import nbdkit
except ImportError:  # `python3 nbd_plugin.py --help`, or unit tests
    nbdkit = None

API_VERSION = 2

DEFAULT_ADDRESS = "127.0.0.1:7000"
# One protocol connection per nbdkit worker thread (nbdkit's default is 16
# threads per NBD client), so queue depth 16 needs no waiting for a socket.
DEFAULT_CONNECTIONS = 16
MAX_CONNECTIONS = 1024

config_help = """\
vdi=<NAME>             (required) The VDI to export.
address=<HOST[:PORT]>  A sheep (default 127.0.0.1:7000), or unix:STORE/sock.
snapshot=<TAG|ID>      Export a snapshot of the VDI, read-only, unlocked.
shared=true            Export without the lock, read-only.
connections=<N>        Protocol connections to the sheep (default 16).
writeback=<BOOL>       Cache flag on writes, durable at flush (default true).
metrics=<[HOST:]PORT>  Serve Prometheus metrics there (needs prometheus_client)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StartupError(Exception):
    """A problem nbdkit should report in one line before serving."""


class Options:
    """The parsed key=value parameters."""

    def __init__(self) -> None:
        self.vdi = ""
        self.host, self.port = parse_address(DEFAULT_ADDRESS)
        self.tag = ""
        self.snapid = 0
        self.snapshot = False
        self.shared = False
        self.connections = DEFAULT_CONNECTIONS
        self.writeback = True
        self.metrics: tuple[str, int] | None = None

    @property
    def writable(self) -> bool:
        return not (self.snapshot or self.shared)

    def set(self, key: str, value: str) -> None:
        """Apply one parameter; StartupError for unknown keys or bad values."""
        if key == "vdi":
            if not value or len(value.encode()) >= 256 or "\0" in value:
                raise StartupError(f"vdi={value!r}: a name of 1 to 255 bytes")
            self.vdi = value
        elif key == "address":
            try:
                self.host, self.port = parse_address(value)
            except ValueError:
                raise StartupError(f"address={value!r}: expected HOST[:PORT] or unix:PATH") from None
            if not self.host or not (self.host.startswith("/") or 0 < self.port < 65536):
                raise StartupError(f"address={value!r}: expected HOST[:PORT] or unix:PATH")
        elif key == "snapshot":
            if not value:
                raise StartupError("snapshot=: a tag or a snapshot id")
            self.snapshot = True
            if value.isdigit():
                self.snapid, self.tag = int(value), ""
            else:
                self.snapid, self.tag = 0, value
        elif key == "shared":
            self.shared = _parse_bool(key, value)
        elif key == "writeback":
            self.writeback = _parse_bool(key, value)
        elif key == "connections":
            try:
                n = int(value)
            except ValueError:
                n = 0
            if not 1 <= n <= MAX_CONNECTIONS:
                raise StartupError(f"connections={value!r}: a number from 1 to {MAX_CONNECTIONS}")
            self.connections = n
        elif key == "metrics":
            try:
                self.metrics = parse_endpoint(value)
            except ValueError as e:
                raise StartupError(f"metrics={e}") from None
            _frontend_metrics()  # missing prometheus_client: say so now
        else:
            raise StartupError(f"unknown parameter {key!r}; known: vdi, address, snapshot, "
                               "shared, connections, writeback, metrics")

    def check(self) -> None:
        if not self.vdi:
            raise StartupError("vdi=NAME is required")


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise StartupError(f"{key}={value!r}: expected true or false")


def _frontend_metrics() -> Any:
    """sheepblk.metrics.frontend, or a StartupError saying what to install
    (only metrics= imports prometheus_client: an export without it runs
    where the module is missing)."""
    try:
        from sheepblk.metrics import frontend
    except ImportError as e:
        raise StartupError(
            f"metrics= needs the prometheus_client module in nbdkit's Python "
            f"({sys.executable or 'python'} {sys.version.split()[0]}): {e}; on Debian: "
            "apt-get install python3-prometheus-client") from None
    return frontend


def open_export(opts: Options) -> Vdi:
    """Connect to the cluster and open (and lock, when writable) the VDI.

    Error handling: every failure becomes a StartupError naming the VDI and
    the address, with Sheepdog's own message ("VDI is locked", "No VDI
    found", ...). Resource handling: the caller owns the Vdi and its client.
    """
    where = address_text(opts.host, opts.port)
    what = opts.vdi + (f" snapshot {opts.tag or opts.snapid}" if opts.snapshot else "")
    client = SheepClient(opts.host, opts.port, pool_size=opts.connections)
    try:
        return Vdi(client, opts.vdi, tag=opts.tag, snapid=opts.snapid,
                   writable=opts.writable, lock=opts.writable, cache=opts.writeback)
    except ClientError as e:
        client.close()
        # SheepdogError's text starts with the context (the VDI name).
        msg = str(e).removeprefix(f"{opts.vdi}: ")
        raise StartupError(f"cannot export VDI {what} from {where}: {msg}") from None
    except ValueError as e:  # a name or tag too long for the protocol
        client.close()
        raise StartupError(f"cannot export VDI {what}: {e}") from None


def _fail_at_start(err: StartupError) -> None:
    """Print one line and exit before nbdkit serves.

    nbdkit's Python plugin prints any exception a callback raises with its
    full traceback; a user error deserves one line instead. This runs only
    from config/config_complete/get_ready, before nbdkit binds a socket or
    forks, so there is nothing to clean up but what we opened ourselves.
    """
    sys.stderr.write(f"nbdkit: error: sheepblk: {err}\n")
    sys.stderr.flush()
    os._exit(1)


# ---- nbdkit callbacks: configuration ----

_opts = Options()
_vdi: Vdi | None = None
# With metrics=: the counters (read by every callback below) and their endpoint.
_meter: FrontendMetrics | None = None
_metrics_server: MetricsServer | None = None


def config(key: str, value: str) -> None:
    if key == "help":
        print(__doc__)
        sys.stdout.flush()
        os._exit(0)
    try:
        _opts.set(key, value)
    except StartupError as e:
        _fail_at_start(e)


def config_complete() -> None:
    try:
        _opts.check()
    except StartupError as e:
        _fail_at_start(e)


def thread_model() -> int:
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready() -> None:
    """Open the cluster now, not at the first client: nbdkit then exits at
    start, before forking, when the VDI cannot be served."""
    global _vdi, _meter, _metrics_server
    try:
        if _opts.metrics is not None:
            frontend = _frontend_metrics()
            meter = frontend.FrontendMetrics("sheepblk_nbd", "the NBD export")
            try:
                _metrics_server = frontend.MetricsServer(*_opts.metrics, meter.registry)
            except MetricsListenError as e:
                raise StartupError(e.strerror) from None
            _meter = meter
        _vdi = open_export(_opts)
    except StartupError as e:
        _fail_at_start(e)


def after_fork() -> None:
    """Serve the metrics from a thread now: one started before nbdkit
    forked to the background would not be in the daemon."""
    if _metrics_server is not None:
        _metrics_server.start()


def cleanup() -> None:
    """Release the lock and close the connections when nbdkit exits."""
    global _vdi, _metrics_server
    vdi, _vdi = _vdi, None
    server, _metrics_server = _metrics_server, None
    if server is not None:
        server.close()
    if vdi is not None:
        vdi.close()
        vdi.client.close()


# ---- nbdkit callbacks: per connection ----
# The handle is the shared Vdi itself: one pool of protocol connections for
# every NBD client, so the callbacks below touch nothing else per request.


def open(readonly: bool) -> Vdi:  # noqa: A001 - nbdkit's callback name
    assert _vdi is not None, "get_ready opened the VDI"
    if _opts.shared:
        _refresh(_vdi)
    return _vdi


def _refresh(h: Vdi) -> None:
    try:
        h.refresh()
    except ClientError as e:
        _error(e)


def export_description(h: Vdi) -> str:
    kind = "snapshot of " if h.inode.is_snapshot else ""
    return f"sheepdog {kind}VDI {h.name} ({address_text(_opts.host, _opts.port)})"


def get_size(h: Vdi) -> int:
    return h.size


def is_rotational(h: Vdi) -> bool:
    return False


def can_write(h: Vdi) -> bool:
    return h.writable


def can_flush(h: Vdi) -> bool:
    return h.writable


def can_trim(h: Vdi) -> bool:
    return h.writable


def can_zero(h: Vdi) -> bool:
    return h.writable


def can_fast_zero(h: Vdi) -> bool:
    return h.writable


def can_fua(h: Vdi) -> int:
    return nbdkit.FUA_NATIVE if h.writable else nbdkit.FUA_NONE


def can_multi_conn(h: Vdi) -> bool:
    # Every NBD connection shares one Vdi and its index, and FLUSH_VDI makes
    # every write to the VDI durable, whichever connection sent it.
    return True


def can_extents(h: Vdi) -> bool:
    return True


def can_cache(h: Vdi) -> int:
    return nbdkit.CACHE_NATIVE


F = TypeVar("F", bound=Callable[..., Any])


def _measured(op: str) -> Callable[[F], F]:
    """Count the callback as `op` in the metrics (when metrics= is given).
    A "read" counts its buffer's bytes as read, a "write" as written."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(h: Vdi, *args: Any) -> Any:
            meter = _meter
            if meter is None:
                return fn(h, *args)
            started = meter.start()
            try:
                out = fn(h, *args)
            except BaseException as e:
                meter.done(op, started, error=e)
                raise
            n = len(args[0]) if op in ("read", "write") else 0
            meter.done(op, started, read=n if op == "read" else 0,
                       written=n if op == "write" else 0)
            return out
        return call  # type: ignore[return-value]
    return wrap


def _error(e: ClientError) -> None:
    nbdkit.set_error(e.errno)
    raise e


@_measured("read")
def pread(h: Vdi, buf: memoryview, offset: int, flags: int) -> None:
    try:
        h.pread_into(buf, offset)
    except ClientError as e:
        _error(e)


@_measured("write")
def pwrite(h: Vdi, buf: memoryview, offset: int, flags: int) -> None:
    try:
        h.pwrite(buf, offset, fua=bool(flags & nbdkit.FLAG_FUA))
    except ClientError as e:
        _error(e)


@_measured("flush")
def flush(h: Vdi, flags: int) -> None:
    try:
        h.flush()
    except ClientError as e:
        _error(e)


@_measured("trim")
def trim(h: Vdi, count: int, offset: int, flags: int) -> None:
    try:
        h.trim(count, offset)
        if flags & nbdkit.FLAG_FUA:
            h.flush()
    except ClientError as e:
        _error(e)


@_measured("zero")
def zero(h: Vdi, count: int, offset: int, flags: int) -> None:
    may_trim = bool(flags & nbdkit.FLAG_MAY_TRIM)
    if flags & nbdkit.FLAG_FAST_ZERO and not h.zero_is_fast(count, offset, may_trim=may_trim):
        nbdkit.set_error(errno.EOPNOTSUPP)
        raise OSError(errno.EOPNOTSUPP, "zeroing would write zeros")
    try:
        h.zero(count, offset, may_trim=may_trim)
        if flags & nbdkit.FLAG_FUA:
            h.flush()
    except ClientError as e:
        _error(e)


@_measured("cache")
def cache(h: Vdi, count: int, offset: int, flags: int) -> None:
    try:
        h.prefetch(count, offset)
    except ClientError as e:
        _error(e)


@_measured("extents")
def extents(h: Vdi, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    hole = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    out = [(e.offset, e.length, 0 if e.allocated else hole) for e in h.extents(count, offset)]
    if flags & nbdkit.FLAG_REQ_ONE:
        del out[1:]
    return out


def _main(argv: list[str]) -> int:
    """`python3 nbd_plugin.py --help`: nbdkit itself never shows our help."""
    print(__doc__)
    return 0 if argv[1:] in ([], ["--help"], ["-h"]) else 2


if __name__ == "__main__" and nbdkit is None:
    sys.exit(_main(sys.argv))

__all__: list[Any] = []
