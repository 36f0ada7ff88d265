"""`dog vdi cache flush|delete|info|purge`: Sheepdog 0.9's object cache
commands (dog/vdi.c of v0.9; 1.0 dropped them with the cache).

No sheep of ours keeps an object cache: a client caches its own writes
(`writeback`) and FLUSH_VDI makes them durable on every copy. So `flush`
sends FLUSH_VDI, as 0.9's did, and works; `info`, `delete` and `purge` ask
the sheep, which answers NO_SUPPORT, and dog says so in 0.9's words with
why ("no object cache runs on this sheep"), exit 1.
"""

from __future__ import annotations

import click

from sheepblk.client import ClientError, SheepClient, SheepdogError
from sheepblk.proto import ObjArgs, Op, Res, strerror, vid_to_vdi_oid

from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, QuietError
from .options import Target, parse_snapshot, snapshot_option, target_options

NO_CACHE_HINT = "no object cache runs on this sheep (sheepblk keeps none)"


def _vid(c: SheepClient, name: str, snapshot: str | None) -> int:
    snapid, tag = parse_snapshot(snapshot)
    try:
        return c.lookup_vdi(name, tag, snapid).vid
    except SheepdogError as e:
        raise QuietError(f"Failed to open VDI {name} (snapshot id: {snapid} snapshot tag: "
                         f"{tag}): {strerror(e.result)}", EXIT_FAILURE) from None


def _ask(c: SheepClient, op: Op, what: str, args: bytes = bytes(32),
         data_length: int = 0) -> None:
    """Send `op`; a refusal is `what`'s failure line (and why, for NO_SUPPORT)."""
    try:
        rsp, _ = c.request(op, args, data_length=data_length, check=False)
    except ClientError as e:
        raise QuietError(f"{what}: {e}", EXIT_SYSFAIL) from None
    if rsp.result == Res.NO_SUPPORT:
        raise QuietError(f"{what}: {strerror(rsp.result)}\n{NO_CACHE_HINT}", EXIT_FAILURE)
    if rsp.result != Res.SUCCESS:
        raise QuietError(f"{what}: {strerror(rsp.result)}", EXIT_FAILURE)


@click.group("cache")
def cache() -> None:
    """Run 'dog vdi cache' for more information"""


@cache.command("flush")
@click.argument("name")
@snapshot_option
@target_options
def cache_flush(target: Target, name: str, snapshot: str | None) -> int:
    """flush the cache of the vdi specified: every write so far made durable"""
    with target.client(pool_size=1) as c:
        vid = _vid(c, name, snapshot)
        _ask(c, Op.FLUSH_VDI, "failed to execute request",
             ObjArgs(oid=vid_to_vdi_oid(vid)).pack())
    return EXIT_SUCCESS


@cache.command("delete")
@click.argument("name")
@snapshot_option
@target_options
def cache_delete(target: Target, name: str, snapshot: str | None) -> int:
    """delete the cache of the vdi specified in all nodes"""
    with target.client(pool_size=1) as c:
        vid = _vid(c, name, snapshot)
        _ask(c, Op.DELETE_CACHE, "failed to execute request",
             ObjArgs(oid=vid_to_vdi_oid(vid)).pack())
    return EXIT_SUCCESS


@cache.command("info")
@target_options
def cache_info(target: Target) -> int:
    """show vdi cache information in the node"""
    with target.client(pool_size=1) as c:
        _ask(c, Op.GET_CACHE_INFO, "failed to get cache information", data_length=4096)
    return EXIT_SUCCESS


@cache.command("purge")
@click.argument("name", required=False)
@snapshot_option
@target_options
def cache_purge(target: Target, name: str | None, snapshot: str | None) -> int:
    """purge the cache of all vdi (no flush)"""
    with target.client(pool_size=1) as c:
        args = bytes(32)
        if name is not None:
            args = ObjArgs(oid=vid_to_vdi_oid(_vid(c, name, snapshot))).pack()
        _ask(c, Op.CACHE_PURGE, "failed to execute request", args)
    return EXIT_SUCCESS
