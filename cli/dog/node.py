"""`dog node ...`: list, info, recovery, kill, vnodes."""

from __future__ import annotations

import time

import click

from sheepblk.client import ClientError, SheepdogError
from sheepblk.proto import Op, RecoveryState, RecoveryThrottle, SdNode, strerror
from sheepblk.proto.records import RECOVERY_THROTTLE_SIZE

from ..cnum import str_to_uint, strtoll
from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, EXIT_USAGE, QuietError
from .format import NODE_LIST_HEADER, node_addr, node_list_row, sort_nodes, strnumber
from .inodes import walk_vdis
from .node_md import md
from .node_stat import node_log, node_stat
from .options import Target, raw_option, target_options
from .progress import Progress

# enum rw_state in Sheepdog's recovery.c, as STAT_RECOVERY reports it.
RW_PREPARE_LIST, RW_RECOVER_OBJ, RW_NOTIFY_COMPLETION = 0, 1, 2
# How often `node recovery -P` polls.
PROGRESS_INTERVAL = 1.0


def cluster_nodes(target: Target) -> list[SdNode]:
    """The node list in dog's order; fails like dog when nobody answers."""
    with target.client() as c:
        try:
            nodes = c.node_list()
        except SheepdogError as e:
            raise QuietError(f"Failed to get node list: {strerror(e.result)}",
                             EXIT_SYSFAIL) from None
    if not nodes:
        raise QuietError("There are no active sheep daemons", EXIT_FAILURE)
    return sort_nodes(nodes)


@click.group("node")
def node() -> None:
    """Node commands: list, info, recovery, kill, vnodes, stat, log, md."""


node.add_command(md)
node.add_command(node_stat)
node.add_command(node_log)


@node.command("list")
@raw_option
@target_options
def node_list(target: Target, raw: bool) -> int:
    """list nodes"""
    nodes = cluster_nodes(target)
    if not raw:
        click.echo(NODE_LIST_HEADER)
    for i, n in enumerate(nodes):
        click.echo(node_list_row(i, n, raw))
    return EXIT_SUCCESS


def _percent(used: int, total: int) -> int:
    return int(used / total * 100) if total else 0


@node.command("info")
@raw_option
@target_options
def node_info(target: Target, raw: bool) -> int:
    """show information about each node"""
    nodes = cluster_nodes(target)
    if not raw:
        click.echo("Id\tSize\tUsed\tAvail\tUse%")
    total_size = total_avail = 0
    answered = 0
    last_error = ""
    for i, n in enumerate(nodes):
        try:
            with Target.node_client(n.nid) as c:
                st = c.stat_sheep()
        except ClientError as e:
            last_error = str(e)
            continue
        used = st.store_size - st.store_free
        pct = _percent(used, st.store_size)
        size_s, used_s, free_s = (strnumber(v, raw) for v in (st.store_size, used, st.store_free))
        click.echo(f"{i} {size_s} {used_s} {free_s} {pct}%" if raw
                   else f"{i:2d}\t{size_s}\t{used_s}\t{free_s}\t{pct:3d}%")
        answered += 1
        total_size += st.store_size
        total_avail += st.store_free
    if not answered:
        raise QuietError(f"Cannot get information from any nodes: {last_error}", EXIT_SYSFAIL)
    with target.client() as c:
        vdi_total = sum(v.header.vdi_size for v in walk_vdis(c) if not v.header.is_snapshot)
    used = total_size - total_avail
    pct = _percent(used, total_size)
    t, u, a, v = (strnumber(x, raw) for x in (total_size, used, total_avail, vdi_total))
    if raw:
        click.echo(f"Total {t} {u} {a} {pct}% {v}")
    else:
        click.echo(f"Total\t{t}\t{u}\t{a}\t{pct:3d}%\n\nTotal virtual image size\t{v}")
        with target.client() as c:
            departed = c.departed()
        if departed:
            click.echo("\nLeft the cluster on a fault:")
            for nid, why in departed:
                click.echo(f"  {nid}: {why}")
    return EXIT_SUCCESS


def _recovery_state(nid_target: Target) -> RecoveryState:
    with nid_target.client(pool_size=1) as c:
        try:
            return c.stat_recovery()
        except SheepdogError as e:
            raise QuietError(strerror(e.result), EXIT_FAILURE) from None


def _show_progress(target: Target) -> int:
    """`dog node recovery -P`: follow the node's recovery until it ends,
    as dog's node_recovery_progress does: a bar (progress.py) of objects
    recovered on a terminal, the list and completion phases as lines."""
    state = _recovery_state(target)
    if not state.in_recovery:
        return EXIT_SUCCESS
    phases = {RW_PREPARE_LIST: "preparing a checked object list...",
              RW_NOTIFY_COMPLETION: "notifying a completion of recovery..."}
    shown = None
    with Progress("Recovering") as bar:
        while True:
            prev_total = state.nr_total
            time.sleep(PROGRESS_INTERVAL)
            state = _recovery_state(target)
            if not state.in_recovery:
                bar.finish(prev_total)
                return EXIT_SUCCESS
            if state.state in phases:
                if shown != state.state:  # once per phase, on a line of its own
                    bar.close()
                    click.echo(phases[state.state])
                    shown = state.state
            else:
                bar(state.nr_finished, state.nr_total)


@node.group("recovery", invoke_without_command=True)
@click.option("-P", "--progress", is_flag=True, help="show progress of recovery in the node")
@raw_option
@target_options
@click.pass_context
def node_recovery(ctx: click.Context, target: Target, progress: bool, raw: bool) -> int | None:
    """show recovery information of nodes"""
    if ctx.invoked_subcommand is not None:
        return None
    return _recovery_info(target, progress, raw)


@node_recovery.command("info")
@click.option("-P", "--progress", is_flag=True, help="show progress of recovery in the node")
@raw_option
@target_options
def recovery_info(target: Target, progress: bool, raw: bool) -> int:
    """show recovery information of nodes (default)"""
    return _recovery_info(target, progress, raw)


def _recovery_info(target: Target, progress: bool, raw: bool) -> int:
    if progress:
        return _show_progress(target)
    nodes = cluster_nodes(target)
    if not raw:
        click.echo("Nodes In Recovery:")
        click.echo("  Id   Host:Port         V-Nodes       Zone       Progress")
    for i, n in enumerate(nodes):
        state = _recovery_state(Target(n.nid.addr, n.nid.port))
        if not state.in_recovery:
            continue
        host = node_addr(n.nid)
        if raw:
            click.echo(f"{i} {host} {n.nr_vnodes} {n.zone} {state.nr_finished} {state.nr_total}")
        else:
            pct = 100 * state.nr_finished / state.nr_total if state.nr_total else 0.0
            click.echo(f"{i:4d}   {host:<20s}{n.nr_vnodes:5d}{n.zone:11d}{pct:11.1f}%")
    return EXIT_SUCCESS


_U32_MAX = (1 << 32) - 1


@node_recovery.command("set-throttle")
@click.argument("max_arg", metavar="[MAX]", required=False)
@click.argument("interval_arg", metavar="[INTERVAL]", required=False)
@click.option("--max-exec-count", "max_opt", type=int, default=None,
              help="objects recovered at most per interval (0: no throttling)")
@click.option("--interval", "interval_opt", type=int, default=None,
              help="interval in milliseconds (0: no throttling)")
@target_options
def recovery_set_throttle(target: Target, max_arg: str | None, interval_arg: str | None,
                          max_opt: int | None, interval_opt: int | None) -> int:
    """set new throttling (MAX objects every INTERVAL ms; 0 0 turns it off)"""
    raw_max = max_arg if max_opt is None else str(max_opt)
    raw_interval = interval_arg if interval_opt is None else str(interval_opt)
    if raw_max is None or raw_interval is None:
        raise QuietError(f"Invalid interval max ({raw_max}), interval ({raw_interval})",
                         EXIT_USAGE)
    mx = strtoll(raw_max)
    if mx is None or not 0 <= mx <= _U32_MAX:
        raise QuietError(f"Invalid max ({raw_max})", EXIT_USAGE)
    interval = strtoll(raw_interval)
    if interval is None or interval < 0:
        raise QuietError(f"Invalid interval ({raw_interval})", EXIT_USAGE)
    if (mx == 0) != (interval == 0):
        raise QuietError(f"Invalid interval max ({mx}), interval ({interval})", EXIT_USAGE)
    body = RecoveryThrottle(mx, interval, mx > 0).pack()
    with target.client(pool_size=1) as c:
        rsp, _ = c.request(Op.SET_RECOVERY, data=body, check=False)
    if rsp.result != 0:
        raise QuietError("Failed to execute request", EXIT_FAILURE)
    return EXIT_SUCCESS


@node_recovery.command("get-throttle")
@target_options
def recovery_get_throttle(target: Target) -> int:
    """get current throttling"""
    with target.client(pool_size=1) as c:
        rsp, out = c.request(Op.GET_RECOVERY, data_length=RECOVERY_THROTTLE_SIZE, check=False)
    if rsp.result != 0:
        raise QuietError("Failed to execute request", EXIT_FAILURE)
    t = RecoveryThrottle.unpack(out)
    click.echo(f"max ({t.max_exec_count}), interval ({t.queue_work_interval})")
    return EXIT_SUCCESS


@node.command("kill")
@click.argument("node_id", required=False)
@click.option("-l", "--local", is_flag=True, help="issue request to local node")
@target_options
def node_kill(target: Target, node_id: str | None, local: bool) -> int:
    """kill node"""
    if local and node_id is not None:
        raise QuietError("don't use -l option and specify node id at the same time", EXIT_USAGE)
    if local:
        victim = target
    elif node_id is None:
        raise QuietError("please specify -l option or node id", EXIT_USAGE)
    else:
        if not node_id.isdigit():
            raise QuietError(f"Invalid node id '{node_id}', please specify a numeric value",
                             EXIT_USAGE)
        nodes = cluster_nodes(target)
        idx = int(node_id)
        if idx >= len(nodes):
            raise QuietError(f"Invalid node id '{idx}'", EXIT_USAGE)
        victim = Target(nodes[idx].nid.addr, nodes[idx].nid.port)
    with victim.client(pool_size=1) as c:
        try:
            c.request(Op.KILL_NODE)
        except SheepdogError as e:
            raise QuietError(f"Failed to execute request: {strerror(e.result)}",
                             EXIT_FAILURE) from None
        except ClientError:
            # The node may die before it answers: that is success.
            pass
    return EXIT_SUCCESS


@node.group("vnodes")
def node_vnodes() -> None:
    """set the node's vnodes (fixed vnodes strategy)"""


@node_vnodes.command("set")
@click.argument("count", metavar="<num of vnodes>")
@target_options
def vnodes_set(target: Target, count: str) -> int:
    """set new vnodes"""
    nr_vnodes = str_to_uint(count, 0xFFFF)
    if not nr_vnodes:  # refused, or 0
        raise QuietError(f"Invalid number of vnodes '{count}': must be an integer "
                         "between 1 and 65535", EXIT_USAGE)
    with target.client(pool_size=1) as c:
        try:
            c.set_vnodes(nr_vnodes)
        except (SheepdogError, ClientError):
            # C dog says no more, whatever the sheep answered.
            raise QuietError("Failed to execute request", EXIT_FAILURE) from None
    return EXIT_SUCCESS
