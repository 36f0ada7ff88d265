"""`dog cluster ...`: format, info, shutdown, check, recover."""

from __future__ import annotations

import time

import click

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.placement import PLACEMENTS, placement_name
from sheepblk.proto import SD_NODE_SIZE, ClusterFlag, EpochLog, Op, Res, SdNode, strerror
from sheepblk.proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT, SD_MAX_COPIES, STORE_LEN

from .check import check_vdi
from .cluster_snapshot import snapshot
from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, EXIT_USAGE, QuietError
from .format import cluster_time, ctime_seconds, node_addr, redundancy, sort_nodes
from .inodes import walk_vdis
from .options import (
    Target,
    confirm,
    force_option,
    raw_option,
    target_options,
    verbose_option,
)

DEFAULT_STORE = "plain"
MAX_NODES = 6144  # SD_MAX_NODES: room for the node array of FORCE_RECOVER

FORMAT_PROMPT = (
    "    __\n"
    "   ()'`;\n"
    "   /\\|`\n"
    "  /  |   Caution! The cluster is not empty.\n"
    "(/_)_|_  Are you sure you want to continue? [yes/no]: ")

RECOVER_PROMPT = (
    "Caution! Please try starting all the cluster nodes normally before\n"
    "running this command.\n\n"
    "The cluster may need to be force recovered if:\n"
    "  - the master node fails to start because of epoch mismatch; or\n"
    "  - some nodes fail to start after a cluster shutdown.\n\n"
    "Are you sure you want to continue? [yes/no]: ")


def parse_copies(text: str) -> tuple[int, int]:
    """-c: 'N' copies (1..31), or 'D:P' erasure coding. Returns (copies,
    copy_policy) as dog's parse_copy() does."""
    data_s, _, parity_s = text.partition(":")
    bad = QuietError(
        f"Invalid parameter {text}\n"
        "To create replicated vdi, set -c x\n"
        f"  x(1 to {SD_MAX_COPIES})   - number of replicated copies\n"
        "To create erasure coded vdi, set -c x:y\n"
        "  x(2,4,8,16)  - number of data strips\n"
        "  y(1 to 15)   - number of parity strips",
        EXIT_FAILURE)
    if not data_s.isdigit() or (parity_s and not parity_s.isdigit()):
        raise bad
    copies = int(data_s)
    if not parity_s:
        if not 1 <= copies <= SD_MAX_COPIES:
            raise bad
        return copies, 0
    parity = int(parity_s)
    if copies not in (2, 4, 8, 16) or not 1 <= parity < 16:
        raise bad
    return copies + parity, ((copies // 2) << 4) + parity


def check_ec_zones(text: str, policy: int, strips: int, zones: int) -> None:
    """An erasure code needs a zone for each of its D+P strips: with fewer,
    writes would be short of parity from the start (C dog takes it and the
    daemons then store the strips it cannot place nowhere)."""
    if policy and strips > zones:
        raise QuietError(f"Erasure code {text} needs {strips} zones for its {strips} strips, "
                         f"the cluster has {zones}", EXIT_FAILURE)


@click.group("cluster")
def cluster() -> None:
    """Cluster commands: format, info, shutdown, check, recover."""


@cluster.command("format")
@click.option("-b", "--store", default=DEFAULT_STORE, show_default=True,
              help="specify backend store")
@click.option("-c", "--copies", metavar="N",
              help="specify the default data redundancy (number of copies)")
@click.option("-z", "--block-size-shift", "block_size_shift", type=int,
              help="specify the shift num of default data object size")
@click.option("-t", "--strict", is_flag=True,
              help="do not serve write request if number of nodes is not sufficient")
@click.option("-l", "--lock", "use_lock", is_flag=True,
              help="Lock vdi to exclude multiple users")
@click.option("-R", "--recyclevid", is_flag=True, help="enable recycling of VID")
@click.option("-V", "--fixedvnodes", is_flag=True,
              help="disable automatic vnodes calculation")
@click.option("-F", "--avoid-diskfull", is_flag=True,
              help="skip recovery if recovery process can cause disk full")
@click.option("--placement", type=click.Choice(sorted(PLACEMENTS)), default="sheepdog",
              show_default=True,
              help="how objects find their nodes: Sheepdog's vnode ring, or straw2 "
                   "(even to within a few percent; C dog's `vdi object` does not know it)")
@force_option
@target_options
def cluster_format(target: Target, store: str, copies: str | None,
                   block_size_shift: int | None, strict: bool, use_lock: bool,
                   recyclevid: bool, fixedvnodes: bool, avoid_diskfull: bool,
                   placement: str, force: bool) -> int:
    """create a Sheepdog store"""
    nr_copies, policy = parse_copies(copies) if copies else (0, 0)
    if block_size_shift is not None and not 20 <= block_size_shift <= 31:
        raise QuietError("Object size must be 2^20 to 2^31: set -z from 20 to 31", EXIT_FAILURE)
    if len(store.encode()) >= STORE_LEN:
        raise QuietError(f"Invalid store name '{store}'", EXIT_USAGE)
    with target.client() as c:
        nodes = c.node_list()
        _check_vnodes_strategy(target, sort_nodes(nodes), fixedvnodes)
        zones = len({n.zone for n in nodes})
        check_ec_zones(copies or "", policy, nr_copies, zones)
        if nr_copies > zones and not confirm(
                f"Number of copies ({nr_copies}) is larger than number of zones ({zones}).\n"
                "Are you sure you want to continue? [yes/no]: "):
            return EXIT_SUCCESS
        try:
            in_use = c.read_vdis()
        except SheepdogError as e:
            raise QuietError(strerror(e.result), EXIT_FAILURE) from None
        if any(in_use) and not force and not confirm(FORMAT_PROMPT):
            return EXIT_SUCCESS
        flags = 0
        if strict:
            flags |= ClusterFlag.STRICT
        if use_lock:
            flags |= ClusterFlag.USE_LOCK
        if recyclevid:
            flags |= ClusterFlag.RECYCLE_VID
        if not fixedvnodes:
            flags |= ClusterFlag.AUTO_VNODES
        if avoid_diskfull:
            flags |= ClusterFlag.AVOID_DISKFULL
        flags |= PLACEMENTS[placement]
        now = time.time_ns()
        ctime = ((now // 10**9) << 32) | ((now // 1000) % 10**6 * 1000)
        click.echo(f"using backend {store} store")
        try:
            # 0 copies lets the daemon apply its default, as C dog does.
            c.make_fs(nr_copies, copy_policy=policy, flags=flags,
                      block_size_shift=block_size_shift or SD_DEFAULT_BLOCK_SIZE_SHIFT,
                      store=store, ctime=ctime)
        except SheepdogError as e:
            if e.result != Res.NO_STORE:
                raise QuietError(f"Format failed: {strerror(e.result)}", EXIT_SYSFAIL) from None
            click.echo(f"Format failed: {strerror(e.result)}", err=True)
            return list_stores(c)
    return EXIT_SUCCESS


def list_stores(c: SheepClient) -> int:
    """After a format that named no backend of the node: the ones it has,
    as dog's list_store prints them (exit 2 even when listed: the format
    failed; the "Restore failed" of a failed list is C's text)."""
    try:
        names = c.store_list()
    except SheepdogError as e:
        raise QuietError(f"Restore failed: {strerror(e.result)}", EXIT_FAILURE) from None
    click.echo(format_store_list(names), nl=False)
    return EXIT_SYSFAIL


def format_store_list(names: str) -> str:
    """The text of dog's list_store for GET_STORE_LIST's answer."""
    return f"Available stores:\n---------------------------------------\n{names}\n"


def _check_vnodes_strategy(target: Target, nodes: list[SdNode], fixed: bool) -> None:
    """Every storing sheep must have been started for the strategy the
    format asks for (-V: fixed, sheep -V; else auto), as C dog checks:
    a cluster of both kinds cannot be formatted at all."""
    for n in nodes:
        try:
            with target.node_client(n.nid) as nc:
                info = nc.cluster_info()
        except SheepdogError as e:
            raise QuietError(strerror(e.result), EXIT_FAILURE) from None
        except OSError:
            raise QuietError("Fail to execute request", EXIT_FAILURE) from None
        if not n.nr_vnodes:
            continue  # a gateway stores nothing: either strategy will do
        auto = bool(info.flags & ClusterFlag.AUTO_VNODES)
        if auto and fixed:
            raise QuietError("Can not apply the option of '-V', because there are vnode "
                             "strategy of sheep is auto in the cluster", EXIT_FAILURE)
        if not auto and not fixed:
            raise QuietError("Need to specify the option of '-V', because there are vnode "
                             "strategy of sheep is fixed in the cluster", EXIT_FAILURE)


def _epoch_nodes(log: EpochLog) -> str:
    return ", ".join(f"{node_addr(n.nid)}:{n.nr_vnodes}" for n in log.nodes)


def _diff_nodes(log: EpochLog, prev: EpochLog) -> str:
    now = {n.nid for n in log.nodes}
    before = {n.nid for n in prev.nodes}
    parts = [f"+{node_addr(n.nid)}" for n in log.nodes if n.nid not in before]
    parts += [f"-{node_addr(n.nid)}" for n in prev.nodes if n.nid not in now]
    return ", ".join(parts)


def format_cluster_info(result: int, logs: list[EpochLog], *, raw: bool = False,
                        verbose: bool = False, diff: bool = False) -> str:
    """The text of `dog cluster info` for a STAT_CLUSTER answer."""
    out: list[str] = []
    status = (f"running, auto-recovery {'disabled' if logs and logs[0].disable_recovery else 'enabled'}"
              if result == Res.SUCCESS else strerror(result))
    out.append(("" if raw else "Cluster status: ") + status)
    if verbose:
        if result == Res.SUCCESS and logs:
            first = logs[0]
            out.append(("" if raw else "Cluster store: ") +
                       f"{first.drv_name} with {redundancy(first.nr_copies, first.copy_policy)}"
                       " redundancy policy")
            strategy = "auto" if first.flags & ClusterFlag.AUTO_VNODES else "fixed"
            out.append(("" if raw else "Cluster vnodes strategy: ") + strategy)
            if first.flags & ClusterFlag.STRAW2:  # only ours: C dog's lines stay as they are
                out.append(("" if raw else "Cluster placement: ") + placement_name(first.flags))
        else:
            out.append(("" if raw else "Cluster store: ") + strerror(result))
        mode = "disk" if logs and logs[0].flags & ClusterFlag.DISKMODE else "node"
        out.append(("" if raw else "Cluster vnode mode: ") + mode)
    else:
        out.append("")
    if not raw and logs:
        out.append(f"Cluster created at {time.ctime(ctime_seconds(logs[0].ctime))}")
        out.append("")
        out.append("Epoch Time           Version [Host:Port:V-Nodes,,,]")
    for i, log in enumerate(logs):
        when = cluster_time(log.time, raw)
        epoch = f"{log.epoch}" if raw else f"{log.epoch:6d}"
        if diff:
            nodes = "formated" if i == len(logs) - 1 else _diff_nodes(log, logs[i + 1])
        else:
            nodes = _epoch_nodes(log)
        out.append(f"{when} {epoch} [{nodes}]")
    return "\n".join(out) + "\n"


@cluster.command("info")
@click.option("-d", "--diff", is_flag=True,
              help="just output the changes between the two adjacent epochs")
@raw_option
@verbose_option
@target_options
def cluster_info(target: Target, raw: bool, verbose: bool, diff: bool) -> int:
    """show cluster information"""
    with target.client() as c:
        c.node_list()  # as dog: fails early, with its message, when no sheep answers
        result, logs = c.stat_cluster()
    logs = [log for log in logs if log.epoch]
    click.echo(format_cluster_info(result, logs, raw=raw, verbose=verbose, diff=diff), nl=False)
    return EXIT_SUCCESS


@cluster.command("shutdown")
@target_options
def cluster_shutdown(target: Target) -> int:
    """stop Sheepdog"""
    with target.client() as c:
        try:
            c.shutdown()
        except SheepdogError as e:
            raise QuietError(f"failed to execute request: {strerror(e.result)}",
                             EXIT_FAILURE) from None
    return EXIT_SUCCESS


@cluster.command("reweight")
@target_options
def cluster_reweight(target: Target) -> int:
    """reweight the cluster"""
    with target.client() as c:
        try:
            c.request(Op.REWEIGHT)
        except SheepdogError as e:
            raise QuietError(f"Response's result: {strerror(e.result)}", EXIT_FAILURE) from None
    return EXIT_SUCCESS


@cluster.command("check")
@target_options
def cluster_check(target: Target) -> int:
    """check and repair cluster"""
    with target.client() as c:
        nodes = sort_nodes(c.node_list())
        for inode in walk_vdis(c, with_index=True):
            hdr = inode.header
            if hdr.is_snapshot:
                click.echo(f'fix snapshot {hdr.name} (id: {hdr.snap_id}, tag: "{hdr.tag}")')
            else:
                click.echo(f"fix vdi {hdr.name}")
            check_vdi(c, nodes, inode)
    return EXIT_SUCCESS


cluster.add_command(snapshot)


@cluster.group("recover")
def cluster_recover() -> None:
    """See 'dog cluster recover' for more information"""


@cluster_recover.command("force")
@force_option
@target_options
def recover_force(target: Target, force: bool) -> int:
    """force recover cluster immediately"""
    if not force and not confirm(RECOVER_PROMPT):
        return EXIT_SUCCESS
    with target.client() as c:
        try:
            c.request(Op.FORCE_RECOVER, data_length=SD_NODE_SIZE * MAX_NODES)
        except SheepdogError as e:
            raise QuietError(f"failed to execute request, {strerror(e.result)}",
                             EXIT_FAILURE) from None
    return EXIT_SUCCESS


def _light(target: Target, op: int, done: str) -> int:
    with target.client() as c:
        try:
            c.request(op)
        except SheepdogError as e:
            raise QuietError(f"Response's result: {strerror(e.result)}", EXIT_FAILURE) from None
    click.echo(done)
    return EXIT_SUCCESS


@cluster_recover.command("enable")
@target_options
def recover_enable(target: Target) -> int:
    """enable automatic recovery and run once recover if necessary"""
    return _light(target, Op.ENABLE_RECOVER, "Cluster recovery: enable")


@cluster_recover.command("disable")
@target_options
def recover_disable(target: Target) -> int:
    """disable automatic recovery"""
    return _light(target, Op.DISABLE_RECOVER, "Cluster recovery: disable")
