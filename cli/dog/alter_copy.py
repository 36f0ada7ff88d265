"""`dog cluster alter-copy` and `dog vdi alter-copy`: change how many
copies the cluster gives new VDIs, or one VDI has (the daemons then move
its objects). Replicated only: erasure coding cannot be changed, as in
Sheepdog. Messages and their streams are dog's: errors and the final
"is set to" line on stderr, prompts on stdout."""

from __future__ import annotations

import click

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.proto import ClusterArgs, Op, Res, VdiStateArgs, strerror, vid_to_vdi_oid
from sheepblk.proto.constants import SD_DEFAULT_COPIES
from sheepblk.proto.inode import NR_COPIES_OFFSET

from .cluster import parse_copies
from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_USAGE, QuietError
from .inodes import walk_vdis
from .options import Target, confirm, target_options
from .vdi_common import read_vdi

EC_REFUSED = "Changing redundancy level of erasure coded vdi is not supported yet."

CLUSTER_USAGE = (
    "Usage: dog cluster alter-copy [-a address] [-p port] [-h] [-T] [-c copies] [-f]\n"
    "Options:\n"
    "  -a, --address           specify the daemon address (default: localhost)\n"
    "  -p, --port              specify the daemon port\n"
    "  -h, --help              display this help and exit\n"
    "  -T, --time              show elapsed time\n"
    "  -c, --copies            specify the default data redundancy (number of copies)\n"
    "  -f, --force             do not prompt for confirmation")

VDI_USAGE = (
    "Usage: dog vdi alter-copy [-c copies] [-a address] [-p port] [-h] [-T] [-f] <vdiname>\n"
    "Options:\n"
    "  -c, --copies            specify the data redundancy level\n"
    "  -a, --address           specify the daemon address (default: localhost)\n"
    "  -p, --port              specify the daemon port\n"
    "  -h, --help              display this help and exit\n"
    "  -T, --time              show elapsed time\n"
    "  -f, --force             do operation forcibly")

CLUSTER_PROMPT = (
    "    __\n"
    "   ()'`;\n"
    "   /\\|`  Caution! Changing cluster's redundancy level will affect\n"
    "  /  |   all the VDIs to be created later.\n"
    "(/_)_|_  Are you sure you want to continue? [yes/no]: ")

VDI_PROMPT = (
    "    __\n"
    "   ()'`;\n"
    "   /\\|`  Caution! Changing VDI's redundancy level will affect\n"
    "  /  |   the VDI itself only and trigger recovery.\n"
    "(/_)_|_  Are you sure you want to continue? [yes/no]: ")


def _usage_error(usage: str) -> int:
    """dog's EXIT_USAGE return: the reason, then the subcommand's usage."""
    click.echo(EC_REFUSED, err=True)
    click.echo(usage)
    return EXIT_USAGE


def _wanted_copies(copies: str | None, what: str) -> tuple[int, int]:
    if copies is None:
        click.echo(f"The {what}'s redundancy level is not specified, use "
                   f"{SD_DEFAULT_COPIES} as default.")
        return SD_DEFAULT_COPIES, 0
    return parse_copies(copies)


def _more_than_nodes(c: SheepClient, copies: int) -> bool:
    """False when the user declined copies beyond the number of nodes."""
    nodes = len(c.node_list())
    return copies <= nodes or confirm(
        f"Number of copies ({copies}) is larger than number of nodes ({nodes}).\n"
        "Are you sure you want to continue? [yes/no]: ")


copies_option = click.option("-c", "--copies", metavar="N",
                             help="specify the data redundancy level")
force_option = click.option("-f", "--force", is_flag=True, help="do operation forcibly")


@click.command("alter-copy")
@copies_option
@force_option
@target_options
def cluster_alter_copy(target: Target, copies: str | None, force: bool) -> int:
    """set the cluster's redundancy level"""
    if copies is not None and parse_copies(copies)[1]:
        return _usage_error(CLUSTER_USAGE)
    nr, _ = _wanted_copies(copies, "cluster")
    with target.client() as c:
        if not force and not _more_than_nodes(c, nr):
            return EXIT_SUCCESS
        result, logs = c.stat_cluster()
        if result != Res.SUCCESS or not logs:
            raise QuietError(f"Response's result: {strerror(result)}", EXIT_FAILURE)
        now = logs[0]
        if now.copy_policy:
            raise QuietError("The cluster's copy policy is erasure code, changing it is not "
                             "supported yet.", EXIT_FAILURE)
        if now.nr_copies == nr:
            raise QuietError(f"The cluster's redundancy level is already set to {nr}, "
                             "nothing changed.", EXIT_FAILURE)
        if not force and not confirm(CLUSTER_PROMPT):
            return EXIT_SUCCESS
        rsp, _ = c.request(Op.ALTER_CLUSTER_COPY, ClusterArgs(copies=nr).pack(), check=False)
    if rsp.result != Res.SUCCESS:
        raise QuietError("Changing the cluster's redundancy level failure.", EXIT_FAILURE)
    click.echo(f"The cluster's redundancy level is set to {nr}, the old one was "
               f"{now.nr_copies}.", err=True)
    return EXIT_SUCCESS


def _standalone(c: SheepClient, vid: int, parent: int) -> bool:
    """Neither a clone nor anybody's parent: only then may its objects
    get another number of copies (no other VDI shares them)."""
    if parent:
        return False
    return not any(inode.header.parent_vdi_id == vid for inode in walk_vdis(c))


@click.command("alter-copy")
@click.argument("name")
@copies_option
@force_option
@target_options
def vdi_alter_copy(target: Target, name: str, copies: str | None, force: bool) -> int:
    """set the vdi's redundancy level"""
    if copies is not None and parse_copies(copies)[1]:
        raise QuietError(f"Erasure code ({copies}) cannot be set on an existing vdi: its "
                         "objects are full copies, not strips. Create a new vdi with "
                         f"'dog vdi create -c {copies}' and copy {name} into it.",
                         EXIT_FAILURE)
    nr, _ = _wanted_copies(copies, "vdi")
    with target.client() as c:
        if not force and not _more_than_nodes(c, nr):
            return EXIT_SUCCESS
        try:
            head = read_vdi(c, name, None, with_index=False).header
        except QuietError as e:
            click.echo(e.message, err=True)
            raise QuietError(f"Reading {name}'s vdi object failure.", EXIT_FAILURE) from None
        if head.copy_policy:
            raise QuietError(f"{name}'s copy policy is erasure code, changing it is not "
                             "supported yet.", EXIT_FAILURE)
        old = head.nr_copies
        if old == nr:
            raise QuietError(f"{name}'s redundancy level is already set to {old}, "
                             "nothing changed.", EXIT_FAILURE)
        if not _standalone(c, head.vdi_id, head.parent_vdi_id):
            raise QuietError("Only standalone vdi supports changing redundancy level.\n"
                             f"Please clone {name} with -n (--no-share) option first.",
                             EXIT_FAILURE)
        if not force and not confirm(VDI_PROMPT):
            return EXIT_SUCCESS
        try:
            c.write_obj(vid_to_vdi_oid(head.vdi_id), bytes([nr]), NR_COPIES_OFFSET)
        except SheepdogError:
            raise QuietError(f"Overwrite the vdi object's header of {name} failure while "
                             "setting its redundancy level.", EXIT_FAILURE) from None
        args = VdiStateArgs(new_vid=head.vdi_id, copies=nr,
                            block_size_shift=head.block_size_shift)
        rsp, _ = c.request(Op.ALTER_VDI_COPY, args.pack(), check=False)
    if rsp.result != Res.SUCCESS:
        raise QuietError(f"Changing {name}'s redundancy level failure.", EXIT_FAILURE)
    click.echo(f"{name}'s redundancy level is set to {nr}, the old one was {old}.", err=True)
    return EXIT_SUCCESS
