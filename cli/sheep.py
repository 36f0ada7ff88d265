"""`sheep [options] STORE_DIR`: run one node of a sheepblk cluster.

Options follow Sheepdog's sheep(8) where they apply, and Sheepdog's own
test suite starts sheep with them, so they keep C sheep's spellings; the
ones sheepblk has no use for are still accepted (hidden, ignored) so that
such command lines run. Without -f the daemon forks to the background once
its port is bound and it has joined, so `sheep /var/lib/sheepdog && dog
cluster info` works.

Parsing (`parse`) and turning the options into settings (`node_settings`)
start nothing, so tests check every command line without a daemon.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.abbrev import AbbrevCommand
from cli.cnum import str_to_uint
from cli.daemonize import ReadyPipe, daemonize
from cli.errors import QuietError
from sheepblk.loglevels import LOG_INFO, LOG_LEVELS, python_level

if TYPE_CHECKING:
    from sheepblk.cluster.driver import ClusterDriver
    from sheepblk.server import Options

CONTEXT = {"help_option_names": ["-h", "--help"]}


def parse_log(spec: str | None) -> tuple[int, str | None, str | None]:
    """`-l level=debug,dir=PATH,format=json` (or a bare level) -> (sheepdog
    level, dir, format). C sheep's format=json is ours; its default and
    server formats are our text one (None: not given); dst= is accepted and
    ignored."""
    level, directory, fmt = LOG_INFO, None, None
    if not spec:
        return level, directory, fmt
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "level", key
        if key == "level":
            if value.isdigit():
                level = int(value)
            elif value in LOG_LEVELS:
                level = LOG_LEVELS[value]
            else:
                raise QuietError(f"invalid log level {value!r}")
        elif key == "dir":
            directory = value
        elif key == "format":
            if value not in ("json", "default", "server"):
                raise QuietError(f"invalid log format {value!r}")
            fmt = "json" if value == "json" else "text"
        elif key == "dst":
            continue
        else:
            raise QuietError(f"invalid log option {key!r}")
    return level, directory, fmt


@dataclass(frozen=True)
class NodeSettings:
    """What a sheep command line asks for: checked, nothing started yet."""

    opts: Options
    store_arg: str  # STORE_DIR[,DISK...] as given
    disks: list[Path]  # the DISKs, none for a node that keeps objects in STORE_DIR
    log_level: int  # Sheepdog's 0..7
    log_dir: str | None  # None: STORE_DIR
    log_format: str  # "text" or "json" (sheepblk/server/logs.py)
    foreground: bool
    pidfile: str | None

    @property
    def object_dirs(self) -> list[Path]:
        """Where the objects go: the DISKs, else STORE_DIR/obj (Sheepdog's
        single disk; `dog node md info` shows it so)."""
        return self.disks or [self.opts.store_dir / "obj"]


def node_settings(store_arg: str, *, port: int = 7000, bindaddr: str = "127.0.0.1",
                  myaddr: str | None = None, cluster: str = "local", zone: int | None = None,
                  vnodes: int | None = None, gateway: bool = False, nosync: bool = False,
                  foreground: bool = False, log: str | None = None,
                  pidfile: str | None = None, admin_from: tuple[str, ...] = (),
                  metrics: str | None = None, log_format: str | None = None
                  ) -> NodeSettings:
    """The settings of sheep's options (defaults as sheep's); QuietError
    for values no daemon could start with."""
    from sheepblk.server import Options

    # STORE_DIR[,DISK...]: config and epochs in the first, objects on the
    # disks when given (a multi-disk node), else in STORE_DIR/obj.
    parts = [p for p in store_arg.split(",") if p]
    if not parts:
        raise QuietError("no store directory given")
    store_dir = Path(parts[0]).absolute()
    level, log_dir, spec_format = parse_log(log)
    if vnodes is not None and vnodes < 0:
        raise QuietError("vnodes must be >= 0")
    if myaddr:  # ('' is as good as none: the -b address is announced)
        try:  # C sheep's str_to_addr: the other sheep need an address, not a name
            myaddr = str(ip_address(myaddr))
        except ValueError:
            raise QuietError(f"Invalid address: '{myaddr}'") from None
    opts = Options(store_dir=store_dir, port=port, bindaddr=bindaddr, myaddr=myaddr, zone=zone,
                   vnodes=vnodes, gateway=gateway, nosync=nosync, cluster=cluster,
                   admin_from=_admin_networks(admin_from), metrics=_metrics_endpoint(metrics))
    return NodeSettings(opts=opts, store_arg=store_arg,
                        disks=[Path(p).absolute() for p in parts[1:]], log_level=level,
                        log_dir=log_dir, log_format=log_format or spec_format or "text",
                        foreground=foreground, pidfile=pidfile)


def _metrics_endpoint(spec: str | None) -> tuple[str, int] | None:
    """--metrics HOST:PORT -> (host, port); QuietError for a bad one."""
    if spec is None:
        return None
    from sheepblk.metrics import parse_endpoint

    try:
        return parse_endpoint(spec)
    except ValueError as e:
        raise QuietError(f"invalid --metrics: {e}") from None


def _admin_networks(specs: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    """--admin-from CIDR[,CIDR] (the option may also repeat), in order,
    each network once; QuietError naming a bad one."""
    from sheepblk.server.admission import parse_networks

    nets: list[IPv4Network | IPv6Network] = []
    for spec in specs:
        try:
            nets += [n for n in parse_networks(spec) if n not in nets]
        except ValueError as e:
            raise QuietError(f"invalid --admin-from: {e}") from None
    return tuple(nets)


def _checked(message: str, maximum: int, minimum: int = 0
             ) -> Callable[[click.Context, click.Parameter, str | None], int | None]:
    """A click callback reading a number as C sheep does (str_to_u32):
    a bad one is refused with C's own line, no usage text, exit 1."""
    def check(ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        number = str_to_uint(value, maximum)
        if number is None or number < minimum:
            click.echo(message.format(value=value), err=True)
            ctx.exit(1)
        return number
    return check


def _v_option(ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """C sheep's -v: `-v N` sets the vnodes (and wins over -V); a bare -v
    shows the version and exits."""
    if value is None:
        return None
    if value == "":
        from importlib.metadata import version

        click.echo(f"sheep version {version('sheepblk')}")
        ctx.exit(0)
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"-v takes a number of vnodes, not {value!r}") from None


def _vnodes_option(ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """C sheep's -V: 1..65535 read as its str_to_u16 reads them; else C's
    own line, no usage text, exit 1 (Sheepdog's test 110 feeds it "0",
    "65536", "-1", "42a", "+")."""
    if value is None:
        return None
    number = str_to_uint(value, 0xFFFF)
    if not number:
        click.echo(f"Invalid number of vnodes '{value}': must be an integer between 1 "
                   "and 65535", err=True)
        ctx.exit(1)
    return number


@click.command(cls=AbbrevCommand, context_settings=CONTEXT,
               help="Run a sheepblk storage node (a Sheepdog sheep).\n\nSTORE_DIR is where "
                    "this node keeps its state and objects; objects go on the DISKs instead "
                    "when given (multi-disk node).")
@click.argument("store_arg", metavar="STORE_DIR[,DISK...]")
@click.option("-p", "--port", default="7000", help="TCP port (default 7000)",
              callback=_checked("Invalid port number '{value}'", 0xFFFF, minimum=1))
@click.option("-b", "--bindaddr", default="127.0.0.1",
              help="address to listen on (default 127.0.0.1)")
@click.option("-y", "--myaddr", help="address advertised to other sheep")
@click.option("-c", "--cluster", default=None,
              help="cluster driver: corosync[:cluster=NAME] (the default when a corosync "
                   "runs on this host), local[:SHMFILE] (the default otherwise), "
                   "zookeeper:HOST:PORT[,HOST:PORT...], or solo")
@click.option("-z", "--zone", help="zone id (default: from the address)",
              callback=_checked("Invalid zone id '{value}': must be an integer between 0 "
                                "and 4294967295", 0xFFFFFFFF))
@click.option("-g", "--gateway", is_flag=True,
              help="gateway only: serve requests, store no objects")
@click.option("-f", "--foreground", is_flag=True, help="do not daemonise")
@click.option("-l", "--log", help="level=LEVEL,dir=PATH (default level=info, dir=STORE_DIR)")
@click.option("-n", "--nosync", is_flag=True,
              help="never fsync object writes (fast, not crash safe)")
@click.option("-V", "--vnodes", callback=_vnodes_option,
              help="fixed number of virtual nodes (the fixed vnodes strategy)")
@click.option("-v", "v_opt", is_flag=False, flag_value="", default=None, is_eager=True,
              callback=_v_option, metavar="[VNODES]",
              help="-v N: vnodes; bare -v: show the version")
@click.option("-P", "--pidfile", help="also write the pid to this file")
@click.option("--admin-from", "admin_from", multiple=True, metavar="CIDR[,CIDR...]",
              help="also take the ops that format, shut down, kill or reshape the cluster "
                   "(dog cluster format/shutdown/recover/alter-copy/reweight, dog node "
                   "kill/md/vnodes/log level set...) from these IPv4/IPv6 networks; by "
                   "default only this host and the cluster's members may send them")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="text (default): one line per record, with node, epoch and request id; "
                   "json: one JSON object per record (also -l format=json)")
@click.option("--metrics", metavar="[HOST:]PORT",
              help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST defaults to "
                   "127.0.0.1)")
# C sheep's options that sheepblk has no use for: accepted, ignored.
@click.option("-D", "--directio", is_flag=True, hidden=True)
@click.option("-W", "--wildcard-recovery", is_flag=True, hidden=True)
@click.option("-u", "--upgrade", is_flag=True, hidden=True)
@click.option("-i", "--ioaddr", hidden=True)
@click.option("-j", "--journal", hidden=True)
@click.option("-w", "--wq-threads", hidden=True)
@click.option("-R", "--recovery", hidden=True)
@click.option("-r", "--http", hidden=True)
def command(store_arg: str, port: int, bindaddr: str, myaddr: str | None, cluster: str | None,
            zone: int | None, gateway: bool, foreground: bool, log: str | None,
            nosync: bool, vnodes: int | None, v_opt: int | None, pidfile: str | None,
            admin_from: tuple[str, ...], metrics: str | None, log_format: str | None,
            **_ignored: object) -> NodeSettings | int:
    if gateway and vnodes is not None:
        click.echo("Options '-g' and '-V' can not be both specified", err=True)
        return 1
    if cluster is None:
        from sheepblk.cluster.driver import default_spec

        cluster = default_spec()
    return node_settings(store_arg, port=port, bindaddr=bindaddr, myaddr=myaddr,
                         cluster=cluster, zone=zone,
                         vnodes=v_opt if v_opt is not None else vnodes, gateway=gateway,
                         nosync=nosync, foreground=foreground, log=log, pidfile=pidfile,
                         admin_from=admin_from, metrics=metrics, log_format=log_format)


def parse(args: list[str] | None = None) -> NodeSettings | int:
    """sheep's command line (sys.argv's without `args`) -> its settings, or
    the exit code when it asked for help or the version only, or when it
    refused a value with C sheep's own message (-V, -g with -V). Raises
    click.ClickException for usage errors, QuietError for bad values."""
    result: NodeSettings | int = command.main(args, prog_name="sheep", standalone_mode=False)
    return result


def _setup_logging(level: int, directory: Path, foreground: bool, kind: str = "text") -> None:
    """STORE_DIR/sheep.log (or DIR's), reopened on SIGHUP, in `kind`'s
    format (sheepblk/server/logs.py); with -f warnings also on stderr."""
    from sheepblk.server.logs import FIELDS, ReopenableFileHandler, formatter

    directory.mkdir(parents=True, exist_ok=True)
    handler = ReopenableFileHandler(directory / "sheep.log")
    handler.setFormatter(formatter(kind))
    handler.addFilter(FIELDS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(python_level(level))
    if foreground:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        err.setFormatter(logging.Formatter("sheep: %(levelname)s: %(message)s"))
        root.addHandler(err)


def _make_driver(spec: str) -> ClusterDriver:
    if spec == "solo":
        from sheepblk.cluster.solo import SoloDriver

        return SoloDriver()
    from sheepblk.cluster.driver import make_driver

    try:
        driver = make_driver(spec)
    except ImportError as e:  # e.g. kazoo missing: never fall back silently
        raise QuietError(f"cluster driver {spec.split(':')[0]!r} is not available: {e}") from e
    except ValueError as e:
        raise QuietError(str(e)) from e
    if driver.name == "corosync":
        _check_corosync()
    return driver


def _check_corosync() -> None:
    """Said before the fork, as one clear line: a sheep that cannot reach
    corosync would only fail later, in the background."""
    from sheepblk.cluster import cpg
    from sheepblk.cluster.corosync import NOT_RUNNING

    try:
        cpg.library()
    except OSError as e:
        raise QuietError(f"cluster driver 'corosync' is not available: {e} "
                         "(Debian's corosync package installs libcpg4)") from None
    if not cpg.reachable():
        raise QuietError(NOT_RUNNING)


def _driver_error(e: BaseException) -> BaseException | None:
    """The DriverError that ended the daemon (trio wraps it in exception
    groups on its way out), or None."""
    from sheepblk.cluster.driver import DriverError

    if isinstance(e, DriverError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _driver_error(inner)
            if found is not None:
                return found
    return None


def _show_disks_apart(store_arg: str) -> None:
    """Show STORE,DISK,... as separate words in the process's command line,
    as C sheep's does (its parser cuts the argument in place): scripts that
    find a node's daemon by `pgrep -f "sheep STORE "`, Sheepdog's own test
    harness among them, then find multi-disk nodes too."""
    from setproctitle import setproctitle

    setproctitle(" ".join(store_arg.replace(",", " ") if a == store_arg else a
                          for a in sys.argv))


def main(args: list[str] | None = None) -> int:
    """The `sheep` command: its exit code (2 for usage errors)."""
    try:
        settings = parse(args)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except QuietError as e:
        print(f"sheep: {e.message}", file=sys.stderr)
        return e.exitcode
    if isinstance(settings, int):
        return settings
    try:
        return _run(settings)
    except QuietError as e:
        print(f"sheep: {e.message}", file=sys.stderr)
        return e.exitcode


def _run(s: NodeSettings) -> int:
    import trio

    from sheepblk.server import serve
    from sheepblk.store import AlreadyRunning, NodeConfig, PidLock, StoreError, open_node_store

    store_dir, opts = s.opts.store_dir, s.opts
    if s.disks:
        _show_disks_apart(s.store_arg)
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        lock = PidLock(store_dir)
    except AlreadyRunning as e:
        raise QuietError(str(e)) from None
    except OSError as e:
        raise QuietError(f"cannot use {store_dir}: {e.strerror or e}") from None
    driver = _make_driver(opts.cluster)
    pipe: ReadyPipe | None = None
    if not s.foreground:
        forked = daemonize("sheep", "failed to start (see sheep.log)")
        if isinstance(forked, int):
            return forked
        pipe = forked
    lock.write_pid()
    if s.pidfile:
        Path(s.pidfile).write_text(f"{os.getpid()}\n")
    _setup_logging(s.log_level, Path(s.log_dir) if s.log_dir else store_dir, s.foreground,
                   s.log_format)

    def ready() -> None:
        if pipe is not None:
            pipe.ok()

    try:
        store = open_node_store(NodeConfig.load(store_dir).store, s.object_dirs,
                                nosync=opts.nosync)
    except OSError as e:
        why = f"cannot use the disks {','.join(map(str, s.object_dirs))}: {e}"
        logging.getLogger("sheep").error(why)
        if pipe is not None:
            pipe.fail(why)
        raise QuietError(why) from None
    except (StoreError, ValueError) as e:  # an unknown backend, a broken config file
        why = f"{store_dir / 'config'}: {e}"
        logging.getLogger("sheep").error(why)
        if pipe is not None:
            pipe.fail(why)
        raise QuietError(why) from None
    try:
        failed = trio.run(lambda: serve(opts, store, driver, ready=ready))
    except OSError as e:
        from sheepblk.metrics import MetricsListenError

        msg = (e.strerror or str(e) if isinstance(e, MetricsListenError)
               else f"cannot listen on {opts.bindaddr}:{opts.port}: {e.strerror or e}")
        logging.getLogger("sheep").error(msg)
        if pipe is not None:
            pipe.fail(msg)
        raise QuietError(msg) from None
    except Exception as e:
        lost = _driver_error(e)
        if lost is not None:  # said in one line: a traceback would bury it
            msg = f"the cluster driver failed, this node stops serving: {lost}"
            logging.getLogger("sheep").error(msg)
            if pipe is not None:
                pipe.fail(msg)
            raise QuietError(msg) from None
        logging.getLogger("sheep").exception("sheep failed")
        if pipe is not None:
            pipe.fail(str(e))
        raise
    finally:
        lock.release()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
