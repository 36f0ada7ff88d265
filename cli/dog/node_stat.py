"""`dog node stat [-w]` and `dog node log level get|set|list`, as C dog's
node_stat and node_log_level_* (dog/node.c, dog/common.c) print them.

`node stat` shows the node's request counters (SD_OP_STAT, struct sd_stat):
once, or with -w every second with the bytes and requests of that second.
Its one-shot table is C dog's to the byte, including that it prints the
read count under "Write" and the write count under "Read" (dog/node.c
swaps them there, not in -w), so that scripts written against C dog read
the same columns.
"""

from __future__ import annotations

import time

import click

from sheepblk.client import ClientError, SheepClient, SheepdogError
from sheepblk.loglevels import LOG_DEBUG
from sheepblk.proto import Flag, Op, SdStat, strerror
from sheepblk.proto.records import SD_STAT_SIZE

from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, QuietError
from .format import strnumber
from .options import Target, raw_option, target_options

# How often -w samples (C dog: sleep(1)).
WATCH_INTERVAL = 1.0
# Sheepdog's log levels by number (dog/common.c loglevel_table).
LOGLEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
# node_log_level_get/set answer -1 for every failure, which dog's main()
# returns: exit status 255.
EXIT_MINUS_ONE = 255
HEADER = "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD"
WATCH_HEADER = HEADER + "\tWRBW\tRDBW\tRPS"


def _stat(c: SheepClient) -> SdStat:
    try:
        rsp, out = c.request(Op.STAT, data_length=SD_STAT_SIZE, check=False)
    except ClientError as e:
        raise QuietError(f"Failed to connect: {e}", EXIT_SYSFAIL) from None
    if rsp.result != 0:
        raise QuietError(f"failed to get stat information: {strerror(rsp.result)}",
                         EXIT_FAILURE)
    return SdStat.unpack(bytes(out).ljust(SD_STAT_SIZE, b"\0"))


def stat_lines(s: SdStat, raw: bool) -> list[str]:
    """The one-shot table (read and write swapped as C dog prints them)."""
    n = strnumber
    client = (f"{s.gway_active_nr}\t{s.gway_total_nr}\t{s.gway_total_read_nr}\t"
              f"{s.gway_total_write_nr}\t{s.gway_total_remove_nr}\t{s.gway_total_flush_nr}\t"
              f"{n(s.gway_total_rx, raw)}\t{n(s.gway_total_tx, raw)}")
    peer = (f"{s.peer_active_nr}\t{s.peer_total_nr}\t{s.peer_total_read_nr}\t"
            f"{s.peer_total_write_nr}\t{s.peer_total_remove_nr}\t0\t"
            f"{n(s.peer_total_rx, raw)}\t{n(s.peer_total_tx, raw)}")
    if raw:
        return [client, peer]
    return [HEADER, "Client\t" + client, "Peer\t" + peer]


def watch_lines(s: SdStat, last: SdStat, raw: bool) -> list[str]:
    """One sample of -w: totals, then what changed since `last`."""
    n = strnumber
    client = (f"{s.gway_active_nr}\t{s.gway_total_nr}\t{s.gway_total_write_nr}\t"
              f"{s.gway_total_read_nr}\t{s.gway_total_remove_nr}\t{s.gway_total_flush_nr}\t"
              f"{n(s.gway_total_rx, raw)}\t{n(s.gway_total_tx, raw)}\t"
              f"{n(s.gway_total_rx - last.gway_total_rx, raw)}\t"
              f"{n(s.gway_total_tx - last.gway_total_tx, raw)}\t"
              f"{s.gway_total_nr - last.gway_total_nr}")
    peer = (f"{s.peer_active_nr}\t{s.peer_total_nr}\t{s.peer_total_write_nr}\t"
            f"{s.peer_total_read_nr}\t{s.peer_total_remove_nr}\t0\t"
            f"{n(s.peer_total_rx, raw)}\t{n(s.peer_total_tx, raw)}\t"
            f"{n(s.peer_total_rx - last.peer_total_rx, raw)}\t"
            f"{n(s.peer_total_tx - last.peer_total_tx, raw)}\t"
            f"{s.peer_total_nr - last.peer_total_nr}")
    if raw:
        return [client, peer]
    return [WATCH_HEADER, "Client\t" + client, "Peer\t" + peer]


@click.command("stat")
@click.option("-w", "--watch", is_flag=True, help="watch the stat every second")
@raw_option
@target_options
def node_stat(target: Target, watch: bool, raw: bool) -> int:
    """show stat information about the node"""
    with target.client(pool_size=1) as c:
        last = _stat(c)
        if not watch:
            click.echo("\n".join(stat_lines(last, raw)))
            return EXIT_SUCCESS
        s = last
        while True:  # until interrupted, as C dog's
            click.echo("\n".join(watch_lines(s, last, raw)))
            last = s
            time.sleep(WATCH_INTERVAL)
            s = _stat(c)


@click.group("log")
def node_log() -> None:
    """show or set log level of the node"""


@node_log.group("level")
def log_level() -> None:
    """manipulate loglevel"""


def _loglevel_list(err: bool) -> None:
    for i, name in enumerate(LOGLEVELS):
        click.echo(f"{name}\t({i})", err=err)


@log_level.command("get")
@target_options
def log_level_get(target: Target) -> int:
    """get current loglevel"""
    with target.client(pool_size=1) as c:
        try:
            rsp, out = c.request(Op.GET_LOGLEVEL, data_length=4, check=False)
        except ClientError:
            raise QuietError("Failed to execute request", EXIT_MINUS_ONE) from None
    if rsp.result != 0 or len(out) < 4:
        raise QuietError("Failed to execute request", EXIT_MINUS_ONE)
    level = int.from_bytes(bytes(out[:4]), "little", signed=True)
    name = LOGLEVELS[level] if 0 <= level <= LOG_DEBUG else "unknown loglevel"
    click.echo(f"{name} ({level})")
    return EXIT_SUCCESS


@log_level.command("set")
@click.argument("level", metavar="<log level>")
@target_options
def log_level_set(target: Target, level: str) -> int:
    """set new loglevel"""
    if level not in LOGLEVELS:  # C dog takes the names only
        click.echo(f"invalid loglevel: {level}", err=True)
        click.echo("available loglevels:", err=True)
        _loglevel_list(err=True)
        return EXIT_MINUS_ONE
    with target.client(pool_size=1) as c:
        try:
            c.request(Op.SET_LOGLEVEL, flags=Flag.CMD_WRITE,
                      data=LOGLEVELS.index(level).to_bytes(4, "little"))
        except (SheepdogError, ClientError):
            raise QuietError("Failed to execute request", EXIT_MINUS_ONE) from None
    return EXIT_SUCCESS


@log_level.command("list")
def log_level_list() -> int:
    """list available loglevels"""
    _loglevel_list(err=False)
    return EXIT_SUCCESS
