"""`dog cluster snapshot save|list|load|delete`: cluster snapshots in a
directory (see sheepblk.archive), as Sheepdog's dog offers them.

Progress (progress.py) goes to stderr, only when it is a terminal (scripts
and pipes get the plain output). Messages and exit codes follow dog/cluster.c.
"""

from __future__ import annotations

import time

import click

from sheepblk.archive import Archive, ArchiveError
from sheepblk.archive import load as archive_load
from sheepblk.archive import save as archive_save
from sheepblk.client import SheepdogError
from sheepblk.proto import Res, strerror
from sheepblk.proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT

from .errors import EXIT_SUCCESS, EXIT_SYSFAIL, QuietError
from .options import Target, target_options
from .progress import Progress, on_terminal


@click.group("snapshot")
def snapshot() -> None:
    """snapshot/restore the cluster"""


@snapshot.command("save")
@click.argument("tag")
@click.argument("path", required=False)
@target_options
def snapshot_save(target: Target, tag: str, path: str | None) -> int:
    """save a snapshot of every VDI to PATH"""
    if not path:
        raise QuietError("Please specify the path to save snapshot.", 64)
    try:
        with target.client() as c, Progress("Saving") as bar:
            stats = archive_save(c, Archive(path), tag, bar)
            bar.finish()
    except (ArchiveError, OSError, SheepdogError) as e:
        raise QuietError(f"{e}\nFail to save snapshot to path: {path}.", EXIT_SYSFAIL) from None
    if on_terminal():
        click.echo(f"{stats.objects} objects, {stats.new_objects} new, "
                   f"{stats.bytes_written} bytes written", err=True)
    return EXIT_SUCCESS


@snapshot.command("list")
@click.argument("path")
@target_options
def snapshot_list(target: Target, path: str) -> int:
    """list the snapshots in PATH"""
    try:
        logs = Archive(path).logs()
    except (ArchiveError, OSError) as e:
        raise QuietError(f"{e}\nFail to list snapshot.", EXIT_SYSFAIL) from None
    click.echo("Index\t\tTag\t\tSnapshot Time")
    for log in logs:
        click.echo(f"{log.idx}\t\t{log.tag}\t\t{time.ctime(log.time)}")
    return EXIT_SUCCESS


@snapshot.command("load")
@click.argument("tag")
@click.argument("path", required=False)
@click.option("-b", "--store", default=None,
              help="backend store of the re-formatted cluster (default: its current one)")
@target_options
def snapshot_load(target: Target, tag: str, path: str | None, store: str | None) -> int:
    """format the cluster and load snapshot TAG (or index) from PATH into it"""
    if not path:
        raise QuietError("Please specify the path to save snapshot.", 64)
    archive = Archive(path)
    try:
        header = archive.read_header()
        if header is None:
            raise ArchiveError(f"no snapshot in {path}")
        archive.find(tag)
        copies, policy, shift = header
        with target.client() as c:
            if store is None:
                result, logs = c.stat_cluster()
                store = logs[0].drv_name if result == Res.SUCCESS and logs else "plain"
            try:
                c.make_fs(copies, copy_policy=policy, store=store or "plain",
                          block_size_shift=shift or SD_DEFAULT_BLOCK_SIZE_SHIFT)
            except SheepdogError as e:
                raise ArchiveError(f"Format failed: {strerror(e.result)}") from None
            with Progress("Loading") as bar:
                archive_load(c, archive, tag, bar)
                bar.finish()
    except (ArchiveError, OSError, SheepdogError) as e:
        raise QuietError(f"{e}\nFail to load snapshot", EXIT_SYSFAIL) from None
    return EXIT_SUCCESS


@snapshot.command("delete")
@click.argument("tag")
@click.argument("path")
@target_options
def snapshot_delete(target: Target, tag: str, path: str) -> int:
    """delete snapshot TAG (or index) from PATH, freeing what only it used"""
    try:
        Archive(path).delete(tag)
    except (ArchiveError, OSError) as e:
        raise QuietError(f"{e}\nFail to delete snapshot.", EXIT_SYSFAIL) from None
    return EXIT_SUCCESS
