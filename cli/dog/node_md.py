"""`dog node md info|plug|unplug`: the disks of multi-disk nodes.

Formats as dog/node.c prints them: a tab-separated table (Id, Size, Used,
Avail, Use%, Path), `-r` rows prefixed with the node's address, `-A` for
every node of the cluster.
"""

from __future__ import annotations

import os

import click

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.proto import NodeId, Op, strerror
from sheepblk.proto.md_info import MD_INFO_SIZE, unpack_md_info

from .errors import EXIT_FAILURE, EXIT_SUCCESS, QuietError
from .format import node_addr, sort_nodes, strnumber
from .options import Target, confirm, force_option, raw_option, target_options

PLUG_PROMPT = (
    "    __\n"
    "   ()'`;\n"
    "   /\\|`\n"
    "  /  |   Caution! The directories to be plugged will be purged.\n"
    "(/_)_|_  Are you sure you want to continue? [yes/no]: ")
UNPLUG_PROMPT = (
    "    __\n"
    "   ()'`;\n"
    "   /\\|`\n"
    "  /  |   Caution! Recovery will be triggered after unplugging.\n"
    "(/_)_|_  Are you sure you want to continue? [yes/no]: ")


def _info_rows(c: SheepClient, nid: NodeId, raw: bool) -> list[str]:
    try:
        _, out = c.request(Op.MD_INFO, data_length=MD_INFO_SIZE)
    except SheepdogError as e:
        raise QuietError(f"failed to get multi-disk information: {strerror(e.result)}",
                         EXIT_FAILURE) from None
    rows = []
    for idx, path, free, used in unpack_md_info(bytes(out).ljust(MD_INFO_SIZE, b"\0")):
        size = free + used
        pct = int(used / size * 100) if size else 0
        if raw:
            rows.append(f"{node_addr(nid)} {idx} {size} {used} {free} {pct}% {path}")
        else:
            rows.append(f"{idx:2d}\t{strnumber(size)}\t{strnumber(used)}\t{strnumber(free)}\t"
                        f"{pct:3d}%\t{path}")
    return rows


@click.group("md")
def md() -> None:
    """See 'dog node md' for more information"""


@md.command("info")
@click.option("-A", "--all", "all_nodes", is_flag=True,
              help="show md information of all the nodes")
@raw_option
@target_options
def md_info(target: Target, raw: bool, all_nodes: bool) -> int:
    """show multi-disk information"""
    if not raw:
        click.echo("Id\tSize\tUsed\tAvail\tUse%\tPath")
    if not all_nodes:
        with target.client() as c:
            for row in _info_rows(c, NodeId(target.address, target.port), raw):
                click.echo(row)
        return EXIT_SUCCESS
    with target.client() as c:
        nodes = sort_nodes(c.node_list())
    for i, n in enumerate(nodes):
        if not raw:
            click.echo(f"Node {i}:")
        with Target.node_client(n.nid) as c:
            for row in _info_rows(c, n.nid, raw):
                click.echo(row)
    return EXIT_SUCCESS


def _plug(target: Target, disks: str, op: int) -> int:
    # The sheep takes absolute paths only: ours are relative to where dog runs.
    paths = ",".join(os.path.abspath(p.strip()) for p in disks.split(",") if p.strip())
    with target.client() as c:
        try:
            c.request(op, data=paths.encode() + b"\0")
        except SheepdogError:
            raise QuietError("Failed to execute request, look for sheep.log"
                             " for more information", EXIT_FAILURE) from None
    return EXIT_SUCCESS


@md.command("plug")
@click.argument("disks")
@force_option
@target_options
def md_plug(target: Target, disks: str, force: bool) -> int:
    """plug more disk(s) into node (comma-separated paths)"""
    if not force and not confirm(PLUG_PROMPT):
        return EXIT_SUCCESS
    return _plug(target, disks, Op.MD_PLUG)


@md.command("unplug")
@click.argument("disks")
@force_option
@target_options
def md_unplug(target: Target, disks: str, force: bool) -> int:
    """unplug disk(s) from node (comma-separated paths)"""
    if not force and not confirm(UNPLUG_PROMPT):
        return EXIT_SUCCESS
    return _plug(target, disks, Op.MD_UNPLUG)
