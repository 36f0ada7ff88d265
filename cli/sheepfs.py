"""`sheepfs MOUNTPOINT`: the cluster as files (see sheepblk/fs/operations.py).

By default the command returns once the mount is up, leaving a daemon
serving it, so a script can use the mount point on the next line; `-f`
stays in the foreground. Unmount with `fusermount3 -u MOUNTPOINT` or by
sending SIGTERM to the daemon: both write back and flush what was written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sheepblk.fs.mount import MountError, MountOptions, check_cluster, check_mountpoint, run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sheepfs", description="Mount a sheepblk cluster as files.")
    p.add_argument("mountpoint")
    p.add_argument("-a", "--address", default="127.0.0.1", help="sheep address (127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=7000, help="sheep port (7000)")
    p.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users access the mount (FUSE allow_other)")
    p.add_argument("-d", "--debug", action="store_true", help="log debugging output")
    p.add_argument("--log", metavar="FILE", help="log to FILE (a daemon logs nowhere otherwise)")
    return p


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO
    fmt = "%(asctime)s sheepfs[%(process)d] %(levelname)s %(name)s: %(message)s"
    if args.log:
        logging.basicConfig(filename=args.log, level=level, format=fmt)
    elif args.foreground:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)
    else:
        logging.basicConfig(handlers=[logging.NullHandler()], level=level)


def _daemonize(opts: MountOptions, args: argparse.Namespace) -> int:
    """Fork; the child mounts and serves, the parent waits for the mount to
    be up (or to fail) and returns with its result."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace")
        if msg == "ok":
            return 0
        print(f"sheepfs: {msg or 'the daemon died before mounting'}", file=sys.stderr)
        os.waitpid(pid, 0)
        return 1
    os.close(rfd)
    os.setsid()
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    _setup_logging(args)

    def ready(message: str | None) -> None:
        os.write(wfd, b"ok" if message is None else message.encode())
        os.close(wfd)

    code = 1
    try:
        code = run(opts, ready)
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        mountpoint = check_mountpoint(args.mountpoint)
        check_cluster(args.address, args.port)
    except MountError as e:
        print(f"sheepfs: {e}", file=sys.stderr)
        return 1
    opts = MountOptions(mountpoint, args.address, args.port, args.allow_other,
                        debug_fuse=False)
    if not args.foreground:
        return _daemonize(opts, args)
    _setup_logging(args)
    try:
        return run(opts)
    except MountError as e:
        print(f"sheepfs: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
