"""Options every dog command shares (-a, -p, -r, -v) and the target sheep.

Why: C dog accepts these on each subcommand (`dog vdi list -r -p 7001`),
also after the positional arguments, and reads SHEEPDOG_DOG_ADDR and
SHEEPDOG_DOG_PORT from the environment; one decorator keeps that identical
everywhere.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import click

from sheepblk.client import SheepClient
from sheepblk.proto import SD_LISTEN_PORT, NodeId

from .errors import EXIT_FAILURE, EXIT_USAGE, QuietError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_ADDR = "127.0.0.1"
# Enough connections for the object pipeline of `vdi read`/`vdi write`.
POOL_SIZE = 8


class Target:
    """The sheep a command talks to; clients are made on demand."""

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port

    def client(self, pool_size: int = POOL_SIZE) -> SheepClient:
        return SheepClient(self.address, self.port, pool_size=pool_size)

    @staticmethod
    def node_client(nid: NodeId) -> SheepClient:
        """A client of another member of the cluster (per-node commands)."""
        return SheepClient(nid.addr, nid.port, pool_size=1)


def _address(value: str | None) -> str:
    if value is None:
        value = os.environ.get("SHEEPDOG_DOG_ADDR", DEFAULT_ADDR)
    if not value or any(c.isspace() for c in value):
        raise QuietError(f"Invalid ip address {value}", EXIT_FAILURE)
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return value


def _port(value: str | None) -> int:
    if value is None:
        value = os.environ.get("SHEEPDOG_DOG_PORT", str(SD_LISTEN_PORT))
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise QuietError(f"Invalid port number '{value}'", EXIT_USAGE)
    return int(value)


def target_options(f: F) -> F:
    """Add -a/--address and -p/--port; the command gets `target: Target`."""

    @click.option("-a", "--address", metavar="ADDR",
                  help="specify the daemon address (default: localhost)")
    @click.option("-p", "--port", metavar="PORT", help="specify the daemon port")
    @functools.wraps(f)
    def wrapper(*args: Any, address: str | None, port: str | None, **kw: Any) -> Any:
        return f(*args, target=Target(_address(address), _port(port)), **kw)

    return wrapper  # type: ignore[return-value]


raw_option = click.option(
    "-r", "--raw", is_flag=True,
    help="raw output mode: omit headers, separate fields with single spaces "
         "and print all sizes in decimal bytes")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="print more information than default")
force_option = click.option("-f", "--force", is_flag=True,
                            help="do not prompt for confirmation")


def parse_snapshot(value: str | None) -> tuple[int, str]:
    """-s: a positive integer is a snapshot id, anything else a tag."""
    if not value:
        return 0, ""
    if value.isdigit():
        snapid = int(value)
        if snapid == 0:
            raise QuietError("The snapshot id must be larger than zero", EXIT_FAILURE)
        return snapid, ""
    return 0, value


snapshot_option = click.option("-s", "--snapshot", metavar="SNAPSHOT",
                               help="specify a snapshot id or tag name")


def _buffered_stdout() -> TextIO:
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and out.write_through:
        out.flush()
        raw = io.FileIO(out.fileno(), "w", closefd=False)
        out = io.TextIOWrapper(io.BufferedWriter(raw), encoding=out.encoding,
                               errors=out.errors)
        sys.stdout = out
    return out


def confirm(message: str) -> bool:
    """Ask on stdout, read one line from stdin; like dog, only an answer
    starting with 'yes' goes on (the caller exits 0 otherwise).

    Buffered as C's stdio buffers it: flushed at once to a terminal, but
    into a pipe or file only with later output or at exit, so a message
    dog writes to stderr after the answer comes first there (Sheepdog's
    expected outputs show `alter-copy`'s "... is set to N" line ahead of
    the prompt). Python's stdout may be unbuffered (PYTHONUNBUFFERED):
    then a buffered one takes its place for the rest of the command."""
    if sys.stdout.isatty():
        click.echo(message, nl=False)
    else:
        _buffered_stdout().write(message)
    try:
        answer = sys.stdin.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return answer[:3].lower() == "yes"
