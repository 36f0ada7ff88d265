"""`sheepfs MOUNTPOINT`: the cluster as files (see sheepblk/fs/operations.py).

By default the command returns once the mount is up, leaving a daemon
serving it, so a script can use the mount point on the next line; `-f`
stays in the foreground. Unmount with `fusermount3 -u MOUNTPOINT` or by
sending SIGTERM to the daemon: both write back and flush what was written.

Parsing (`parse`) starts nothing, so tests check command lines without a
mount.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys
from dataclasses import dataclass

import click

from cli.abbrev import AbbrevCommand
from cli.daemonize import daemonize
from cli.errors import QuietError
from sheepblk.fs.mount import MountError, MountOptions, check_cluster, check_mountpoint, run
from sheepblk.loglevels import LOG_DEBUG, LOG_INFO, python_level
from sheepblk.metrics import parse_endpoint

CONTEXT = {"help_option_names": ["-h", "--help"]}


@dataclass(frozen=True)
class FsSettings:
    """What a sheepfs command line asks for: nothing checked or started yet."""

    mountpoint: str  # as given
    address: str
    port: int
    foreground: bool
    allow_other: bool
    debug: bool
    log: str | None
    uid: int | None = None
    gid: int | None = None
    metrics: tuple[str, int] | None = None

    def mount_options(self, mountpoint: str) -> MountOptions:
        """The mount's options, on `mountpoint` (check_mountpoint's)."""
        return MountOptions(mountpoint, self.address, self.port, self.allow_other,
                            debug_fuse=False, metrics=self.metrics, uid=self.uid,
                            gid=self.gid)


def _user(value: str | None) -> int | None:
    if value is None or value.isdigit():
        return None if value is None else int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise click.BadParameter(f"no user {value!r}") from None


def _group(value: str | None) -> int | None:
    if value is None or value.isdigit():
        return None if value is None else int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group {value!r}") from None


@click.command(cls=AbbrevCommand, context_settings=CONTEXT,
               help="Mount a sheepblk cluster as files.")
@click.argument("mountpoint")
@click.option("-a", "--address", default="127.0.0.1", help="sheep address (127.0.0.1)")
@click.option("-p", "--port", type=int, default=7000, help="sheep port (7000)")
@click.option("-f", "--foreground", is_flag=True, help="do not daemonize")
@click.option("--allow-other", is_flag=True,
              help="let other users access the mount (FUSE allow_other)")
@click.option("--uid", "uid_s", metavar="USER",
              help="owner of the files (name or number; default: who mounts)")
@click.option("--gid", "gid_s", metavar="GROUP",
              help="group of the files (name or number; default: who mounts)")
@click.option("-d", "--debug", is_flag=True, help="log debugging output")
@click.option("--log", metavar="FILE", help="log to FILE (a daemon logs nowhere otherwise)")
@click.option("--metrics", metavar="[HOST:]PORT",
              help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST defaults to "
                   "127.0.0.1)")
def command(mountpoint: str, address: str, port: int, foreground: bool, allow_other: bool,
            uid_s: str | None, gid_s: str | None, debug: bool, log: str | None,
            metrics: str | None) -> FsSettings:
    endpoint = None
    if metrics is not None:
        try:
            endpoint = parse_endpoint(metrics)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--metrics") from None
    return FsSettings(mountpoint, address, port, foreground, allow_other, debug, log,
                      uid=_user(uid_s), gid=_group(gid_s), metrics=endpoint)


def parse(args: list[str] | None = None) -> FsSettings | int:
    """sheepfs's command line (sys.argv's without `args`) -> its settings,
    or the exit code when it asked for help only. Raises
    click.ClickException for usage errors."""
    result: FsSettings | int = command.main(args, prog_name="sheepfs", standalone_mode=False)
    return result


def _setup_logging(s: FsSettings) -> None:
    level = python_level(LOG_DEBUG if s.debug else LOG_INFO)
    fmt = "%(asctime)s sheepfs[%(process)d] %(levelname)s %(name)s: %(message)s"
    if s.log:
        logging.basicConfig(filename=s.log, level=level, format=fmt)
    elif s.foreground:
        logging.basicConfig(stream=sys.stderr, level=level, format=fmt)
    else:
        logging.basicConfig(handlers=[logging.NullHandler()], level=level)


def _serve_in_background(opts: MountOptions, s: FsSettings) -> int:
    """Fork; the daemon mounts and serves, this process returns once the
    mount is up (0) or has failed (1, the reason on stderr)."""
    forked = daemonize("sheepfs", "the daemon died before mounting")
    if isinstance(forked, int):
        return forked
    _setup_logging(s)  # before the chdir: a relative --log is the caller's
    os.chdir("/")  # keep no directory busy
    code = 1
    try:
        code = run(opts, forked.report)
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The `sheepfs` command: its exit code (2 for usage errors)."""
    try:
        s = parse(argv)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    if isinstance(s, int):
        return s
    try:
        return _mount(s)
    except QuietError as e:
        print(f"sheepfs: {e.message}", file=sys.stderr)
        return e.exitcode


def _mount(s: FsSettings) -> int:
    try:
        opts = s.mount_options(check_mountpoint(s.mountpoint))
        check_cluster(s.address, s.port)
    except MountError as e:
        raise QuietError(str(e)) from None
    if not s.foreground:
        return _serve_in_background(opts, s)
    _setup_logging(s)
    try:
        return run(opts)
    except MountError as e:
        raise QuietError(str(e)) from None
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
