"""`sheep [options] STORE_DIR`: run one node of a sheepblk cluster.

Options follow Sheepdog's sheep(8) where they apply. Without -f the daemon
forks to the background once its port is bound and it has joined, so
`sheep /var/lib/sheepdog && dog cluster info` works.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

LOG_LEVELS = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4,
    "notice": 5, "info": 6, "debug": 7,
}
_PY_LEVEL = {7: logging.DEBUG, 6: logging.INFO, 5: logging.INFO, 4: logging.WARNING,
             3: logging.ERROR}


class QuietError(Exception):
    """A user error: one line on stderr, no traceback."""


def parse_log(spec: str | None) -> tuple[int, str | None]:
    """`-l level=debug,dir=PATH` (or a bare level) -> (sheepdog level, dir)."""
    level, directory = 6, None
    if not spec:
        return level, directory
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
        elif key in ("format", "dst"):
            continue
        else:
            raise QuietError(f"invalid log option {key!r}")
    return level, directory


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sheep", description="Run a sheepblk storage node (a Sheepdog sheep).")
    p.add_argument("store_dir", metavar="STORE_DIR[,DISK...]",
                   help="where this node keeps its state and objects; objects go on the "
                        "DISKs instead when given (multi-disk node)")
    p.add_argument("-p", "--port", type=int, default=7000, help="TCP port (default 7000)")
    p.add_argument("-b", "--bindaddr", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("-y", "--myaddr", help="address advertised to other sheep")
    p.add_argument("-c", "--cluster", default="local",
                   help="cluster driver: local[:SHMFILE] (default), "
                        "zookeeper:HOST:PORT[,HOST:PORT...], or solo")
    p.add_argument("-z", "--zone", type=int, help="zone id (default: from the address)")
    p.add_argument("-g", "--gateway", action="store_true",
                   help="gateway only: serve requests, store no objects")
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonise")
    p.add_argument("-l", "--log", help="level=LEVEL,dir=PATH (default level=info, "
                                       "dir=STORE_DIR)")
    p.add_argument("-n", "--nosync", action="store_true",
                   help="never fsync object writes (fast, not crash safe)")
    p.add_argument("-V", "--vnodes", type=int, help="fixed number of virtual nodes")
    p.add_argument("-v", dest="v_opt", nargs="?", const="", default=None,
                   metavar="VNODES", help="-v N: vnodes; bare -v: show the version")
    p.add_argument("-P", "--pidfile", help="also write the pid to this file")
    for short, long_ in (("-D", "--directio"), ("-W", "--wildcard-recovery"),
                         ("-u", "--upgrade")):
        p.add_argument(short, long_, action="store_true", help=argparse.SUPPRESS)
    for short, long_ in (("-i", "--ioaddr"), ("-j", "--journal"), ("-w", "--wq-threads"),
                         ("-R", "--recovery"), ("-r", "--http")):
        p.add_argument(short, long_, help=argparse.SUPPRESS)
    return p


def _setup_logging(level: int, directory: Path, foreground: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(directory / "sheep.log")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_PY_LEVEL.get(level, logging.ERROR))
    if foreground:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        err.setFormatter(logging.Formatter("sheep: %(levelname)s: %(message)s"))
        root.addHandler(err)


def _make_driver(spec: str):  # type: ignore[no-untyped-def]
    if spec == "solo":
        from sheepblk.cluster.solo import SoloDriver

        return SoloDriver()
    from sheepblk.cluster.driver import make_driver

    try:
        return make_driver(spec)
    except ImportError as e:  # e.g. kazoo missing: never fall back silently
        raise QuietError(f"cluster driver {spec.split(':')[0]!r} is not available: {e}") from e
    except ValueError as e:
        raise QuietError(str(e)) from e


def _daemonize() -> int | None:
    """Fork; the parent waits for the child's readiness and returns its exit
    code; the child returns None with a pipe end to report readiness on."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        msg = b"".join(chunks).decode(errors="replace")
        if msg.startswith("ok"):
            return 0
        sys.stderr.write(msg or "sheep: failed to start (see sheep.log)\n")
        return 1
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.environ["SHEEPBLK_READY_FD"] = str(w)
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
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.v_opt is not None:
        if ns.v_opt == "":
            from importlib.metadata import version

            print(f"sheep version {version('sheepblk')}")
            return 0
        try:
            ns.vnodes = int(ns.v_opt)
        except ValueError:
            parser.error(f"-v takes a number of vnodes, not {ns.v_opt!r}")
    try:
        return _run(ns)
    except QuietError as e:
        print(f"sheep: {e}", file=sys.stderr)
        return 1


def _run(ns: argparse.Namespace) -> int:
    import trio

    from sheepblk.server import Options, serve
    from sheepblk.store import AlreadyRunning, NodeConfig, PidLock, open_node_store

    # STORE_DIR[,DISK...]: config and epochs in the first, objects on the
    # disks when given (a multi-disk node), else in STORE_DIR/obj.
    parts = [p for p in ns.store_dir.split(",") if p]
    if not parts:
        raise QuietError("no store directory given")
    store_dir = Path(parts[0]).absolute()
    disks = [Path(p).absolute() for p in parts[1:]] or [store_dir]
    if len(parts) > 1:
        _show_disks_apart(ns.store_dir)
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        lock = PidLock(store_dir)
    except AlreadyRunning as e:
        raise QuietError(str(e)) from None
    except OSError as e:
        raise QuietError(f"cannot use {store_dir}: {e.strerror or e}") from None
    level, log_dir = parse_log(ns.log)
    driver = _make_driver(ns.cluster)
    if ns.vnodes is not None and ns.vnodes < 0:
        raise QuietError("vnodes must be >= 0")
    opts = Options(store_dir=store_dir, port=ns.port, bindaddr=ns.bindaddr,
                   myaddr=ns.myaddr, zone=ns.zone, vnodes=ns.vnodes, gateway=ns.gateway,
                   nosync=ns.nosync, cluster=ns.cluster)
    ready_fd = -1
    if not ns.foreground:
        code = _daemonize()
        if code is not None:
            return code
        ready_fd = int(os.environ.pop("SHEEPBLK_READY_FD"))
    lock.write_pid()
    if ns.pidfile:
        Path(ns.pidfile).write_text(f"{os.getpid()}\n")
    _setup_logging(level, Path(log_dir) if log_dir else store_dir, ns.foreground)

    def ready() -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            os.write(ready_fd, b"ok\n")
            os.close(ready_fd)
            ready_fd = -1

    try:
        store = open_node_store(NodeConfig.load(store_dir).store, disks, nosync=ns.nosync)
    except OSError as e:
        raise QuietError(f"cannot use the disks {','.join(map(str, disks))}: {e}") from None
    try:
        failed = trio.run(lambda: serve(opts, store, driver, ready=ready))
    except OSError as e:
        msg = f"cannot listen on {ns.bindaddr}:{ns.port}: {e.strerror or e}"
        logging.getLogger("sheep").error(msg)
        if ready_fd >= 0:
            os.write(ready_fd, f"sheep: {msg}\n".encode())
        raise QuietError(msg) from None
    except Exception as e:
        logging.getLogger("sheep").exception("sheep failed")
        if ready_fd >= 0:
            os.write(ready_fd, f"sheep: {e}\n".encode())
        raise
    finally:
        lock.release()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
