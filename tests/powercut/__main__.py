"""Run the power-cut file system, or send it a command.

    python -m powercut mount BACKING MOUNTPOINT --control SOCKET [--debug]
    python -m powercut ctl SOCKET crash all|crash subset SEED|fail-fsync N [PAT]|enospc on|off|stats

(with tests/ on PYTHONPATH). `mount` serves in the foreground until the
mount point is unmounted (`fusermount3 -u MOUNTPOINT`) or SIGTERM/SIGINT;
either is a clean stop, which makes everything pending durable first,
unless the file system crashed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys

import pyfuse3
import trio

from .client import PowerCutError, command
from .control import serve_control
from .fs import PowerCutOps

log = logging.getLogger("powercut")


def _raise_nofile() -> None:
    """Every file the mount knows keeps a backing fd open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(ops: PowerCutOps, control: str) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, ops, control)
        nursery.start_soon(_watch_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %d: stopping", signum)
            pyfuse3.terminate()
            return


def mount(backing: str, mountpoint: str, control: str, debug: bool = False) -> int:
    """Mount and serve until unmounted or signalled."""
    os.umask(0)  # modes given by the mount's callers are applied as given
    _raise_nofile()
    ops = PowerCutOps(os.path.abspath(backing))
    options = set(pyfuse3.default_options) | {"fsname=powercut", "subtype=powercut"}
    if debug:
        options.add("debug")
    pyfuse3.init(ops, os.path.abspath(mountpoint), options)
    try:
        trio.run(_serve, ops, os.path.abspath(control))
    except BaseException:
        log.exception("stopped on an error")
        raise
    finally:
        try:
            ops.shutdown()
        finally:
            pyfuse3.close(unmount=True)
    log.info("unmounted %s", mountpoint)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m powercut", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="serve MOUNTPOINT over BACKING")
    m.add_argument("backing")
    m.add_argument("mountpoint")
    m.add_argument("--control", required=True, help="unix socket for commands")
    m.add_argument("--debug", action="store_true", help="log every FUSE request")
    c = sub.add_parser("ctl", help="send one command")
    c.add_argument("socket")
    c.add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "ctl":
        try:
            print(json.dumps(command(args.socket, " ".join(args.words)), indent=1))
        except (PowerCutError, OSError) as e:
            print(f"powercut: {e}", file=sys.stderr)
            return 1
        return 0
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return mount(args.backing, args.mountpoint, args.control, args.debug)


if __name__ == "__main__":
    sys.exit(main())
