"""`dog vdi ...`: the group, and creating, deleting, listing, resizing and
inspecting VDIs. I/O, snapshots, attributes and backups live in the
vdi_* modules beside this one and are added to the group here."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import click

from sheepblk.client import ClientError, SheepClient, SheepdogError, Vdi
from sheepblk.proto import (
    SD_INODE_HEADER_SIZE,
    SD_MAX_VDI_SIZE,
    Inode,
    InodeHeader,
    ObjArgs,
    Op,
    Res,
    data_oid_to_idx,
    is_data_obj,
    oid_to_vid,
    strerror,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.proto.btree import init_node
from sheepblk.proto.constants import OLD_MAX_DATA_OBJS, SD_DEFAULT_BLOCK_SIZE_SHIFT
from sheepblk.proto.inode import DATA_VDI_ID_OFFSET, GREF_OFFSET

from .check import check_exist, check_vdi
from .cluster import parse_copies
from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_USAGE, QuietError
from .format import (
    VDI_LIST_HEADER,
    ctime_seconds,
    localtime_str,
    node_addr,
    sort_nodes,
    strnumber,
    vdi_list_row,
)
from .inodes import VdiInode, walk_vdis
from .options import (
    Target,
    raw_option,
    snapshot_option,
    target_options,
    verbose_option,
)
from .treeview import VdiTree
from .vdi_attr import getattr_cmd, lock, setattr_cmd
from .vdi_backup import backup, restore
from .vdi_cache import cache
from .vdi_common import check_name, create_failed, delete_vdi, find_vid, read_vdi
from .vdi_io import read, write
from .vdi_snap import clone, rollback, snapshot

# Preallocation writes this much at a time (several objects in flight).
PREALLOC_CHUNK = 32 << 20


@click.group("vdi")
def vdi() -> None:
    """VDI commands: create, delete, list, read, write, snapshot, clone ..."""


for _cmd in (read, write, snapshot, clone, rollback, setattr_cmd, getattr_cmd, lock,
             backup, restore, cache):
    vdi.add_command(_cmd)


def object_size_for(c: SheepClient, block_size_shift: int | None) -> int:
    if block_size_shift:
        return 1 << block_size_shift
    try:
        shift = c.get_cluster_default().block_size_shift
    except SheepdogError:
        shift = 0
    return 1 << (shift or SD_DEFAULT_BLOCK_SIZE_SHIFT)


def preallocate(vdi_obj: Vdi) -> None:
    """Write zeros into every object the VDI does not own yet."""
    zeros = bytes(min(PREALLOC_CHUNK, vdi_obj.size))
    osize = vdi_obj.object_size
    idx = 0
    nr = vdi_obj.inode.nr_objects
    while idx < nr:
        if vdi_obj.index[idx] == vdi_obj.vid:
            idx += 1
            continue
        end = idx
        while end < nr and vdi_obj.index[end] != vdi_obj.vid and (end - idx) * osize < len(zeros):
            end += 1
        start = idx * osize
        length = min(end * osize, vdi_obj.size) - start
        vdi_obj.pwrite(memoryview(zeros)[:length], start)
        idx = end


@vdi.command("create")
@click.argument("name")
@click.argument("size", required=False)
@click.option("-P", "--prealloc", is_flag=True, help="preallocate all the data objects")
@click.option("-c", "--copies", metavar="N", help="specify the data redundancy level")
@click.option("-z", "--block-size-shift", "block_size_shift", type=click.IntRange(20, 31),
              help="specify the bit shift num for data object size")
@click.option("-y", "--hyper", is_flag=True, help="create a hyper volume")
@raw_option
@verbose_option
@target_options
def create(target: Target, name: str, size: str | None, prealloc: bool, copies: str | None,
           block_size_shift: int | None, hyper: bool, raw: bool, verbose: bool) -> int:
    """create an image"""
    from .format import parse_size

    check_name(name)
    if size is None:
        raise QuietError("Please specify the VDI size", EXIT_USAGE)
    nbytes = parse_size(size)
    nr_copies, policy = parse_copies(copies) if copies else (0, 0)
    if hyper and block_size_shift:
        raise QuietError("Don't specify both -y and -z options, please", EXIT_FAILURE)
    with target.client() as c:
        if policy:
            from .cluster import check_ec_zones

            check_ec_zones(copies or "", policy, nr_copies, len({n.zone for n in c.node_list()}))
        osize = object_size_for(c, SD_DEFAULT_BLOCK_SIZE_SHIFT if hyper else block_size_shift)
        old_max = osize * OLD_MAX_DATA_OBJS
        if nbytes > old_max and not hyper:
            raise QuietError(f"VDI size is larger than {strnumber(old_max)} bytes, please use "
                             f"'-y' to create a hyper volume with size up to "
                             f"{strnumber(SD_MAX_VDI_SIZE)} bytes or use '-z' to create "
                             "larger object size volume", EXIT_USAGE)
        if nbytes > SD_MAX_VDI_SIZE:
            raise QuietError("VDI size is too large", EXIT_USAGE)
        if hyper:  # as dog: a hyper volume has the default object size
            block_size_shift = SD_DEFAULT_BLOCK_SIZE_SHIFT
        try:
            vid = c.create_vdi(name, nbytes, copies=nr_copies, copy_policy=policy,
                               block_size_shift=block_size_shift or 0,
                               store_policy=1 if hyper else 0)
            if hyper:
                # Sheepdog's daemon starts the B-tree of a new hyper volume
                # (sd_inode_init); one that does not leaves data_vdi_id[]
                # zero, which C's dog cannot list (depth 0). The same empty
                # root written here makes the volume readable either way.
                c.write_obj(vid_to_vdi_oid(vid), init_node(1), DATA_VDI_ID_OFFSET)
        except SheepdogError as e:
            raise create_failed(name, e) from None
        if prealloc:
            with Vdi(c, name) as v:
                preallocate(v)
    if verbose:
        click.echo(f"{vid:x}" if raw else f"VDI ID of newly created VDI: {vid:x}")
    return EXIT_SUCCESS


@vdi.command("delete")
@click.argument("name")
@snapshot_option
@target_options
def delete(target: Target, name: str, snapshot: str | None) -> int:
    """delete an image"""
    from .options import parse_snapshot

    snapid, tag = parse_snapshot(snapshot)
    with target.client() as c:
        delete_vdi(c, name, snapid, tag)
    return EXIT_SUCCESS


@vdi.command("list")
@click.argument("name", required=False)
@click.option("-o", "--oid", metavar="OID",
              help="list the VDIs that own the data object OID (hex)")
@raw_option
@target_options
def list_(target: Target, name: str | None, oid: str | None, raw: bool) -> int:
    """list images"""
    want_oid = None
    if oid is not None:
        try:
            want_oid = int(oid, 16)
        except ValueError:
            raise QuietError("object id must be a hex integer", EXIT_FAILURE) from None
        if not is_data_obj(want_oid):
            return EXIT_FAILURE
    if not raw:
        click.echo(VDI_LIST_HEADER)
    with target.client() as c:
        for inode in walk_vdis(c, with_index=True):
            hdr = inode.header
            if name is not None and hdr.name != name:
                continue
            if want_oid is not None:
                owner = inode.owner(data_oid_to_idx(want_oid))
                if not owner or owner != oid_to_vid(want_oid):
                    continue
            mine, cow = inode.stat()
            osize = hdr.object_size
            click.echo(vdi_list_row(hdr, mine * osize, cow * osize, raw))
    return EXIT_SUCCESS


@vdi.command("tree")
@target_options
def tree(target: Target) -> int:
    """show images in tree view format"""
    highlight = sys.stdout.isatty()
    t = VdiTree()
    with target.client() as c:
        for inode in walk_vdis(c):
            hdr = inode.header
            if hdr.is_snapshot:
                label = localtime_str(ctime_seconds(hdr.create_time), "[%Y-%m-%d %H:%M]")
            else:
                label = "(you are here)"
            t.add(hdr.name, label, hdr.vdi_id, hdr.parent_vdi_id,
                  highlight and not hdr.is_snapshot)
    click.echo(t.render(), nl=False)
    return EXIT_SUCCESS


def graph_entry(inode: VdiInode) -> str:
    hdr = inode.header
    seconds = ctime_seconds(hdr.create_time)
    snapid = hdr.snap_id if hdr.is_snapshot else 0
    label = (f"Name: {hdr.name:>10s}\\n"
             f"Tag:  {snapid:10x}\\n"
             f"Size: {strnumber(hdr.vdi_size):>10s}\\n"
             f"Date: {localtime_str(seconds, '%Y-%m-%d'):>10s}\\n"
             f"Time: {localtime_str(seconds, '%H:%M:%S'):>10s}")
    tail = '"\n  ];\n\n' if hdr.is_snapshot else '",\n    color="red"\n  ];\n\n'
    return (f'  "{hdr.parent_vdi_id:x}" -> "{hdr.vdi_id:x}";\n'
            f'  "{hdr.vdi_id:x}" [\n    group = "{hdr.name}",\n    label = "{label}{tail}')


@vdi.command("graph")
@target_options
def graph(target: Target) -> int:
    """show images in Graphviz dot format"""
    parts = ['digraph G {\n  node [shape = "box", fontname = "Courier"];\n\n'
             '  "0" [shape = "ellipse", label = "root"];\n\n']
    with target.client() as c:
        parts.extend(graph_entry(inode) for inode in walk_vdis(c))
    parts.append("}\n")
    click.echo("".join(parts), nl=False)
    return EXIT_SUCCESS


@vdi.command("resize")
@click.argument("name")
@click.argument("size", required=False)
@target_options
def resize(target: Target, name: str, size: str | None) -> int:
    """resize an image (grow only)"""
    from .format import parse_size

    if size is None:
        raise QuietError("Please specify the new size for the VDI", EXIT_USAGE)
    new_size = parse_size(size)
    with target.client() as c:
        vid = find_vid(c, name)
        raw_hdr = bytearray(c.read_obj(vid_to_vdi_oid(vid), SD_INODE_HEADER_SIZE))
        hdr = InodeHeader.unpack(raw_hdr)
        if hdr.store_policy == 0:
            max_size = hdr.object_size * OLD_MAX_DATA_OBJS
            if new_size > max_size:
                raise QuietError(f"New VDI size is too large. This volume's max size is "
                                 f"{max_size}", EXIT_USAGE)
        elif new_size > SD_MAX_VDI_SIZE:
            raise QuietError(f"New VDI size is too large. This volume's max size is "
                             f"{SD_MAX_VDI_SIZE}", EXIT_USAGE)
        if new_size < hdr.vdi_size:
            raise QuietError(f"Shrinking VDIs is not implemented: {name} is "
                             f"{hdr.vdi_size} bytes, asked for {new_size}", EXIT_USAGE)
        struct.pack_into("<Q", raw_hdr, _VDI_SIZE_OFFSET, new_size)
        try:
            c.write_obj(vid_to_vdi_oid(vid), raw_hdr, 0)
        except SheepdogError as e:
            raise QuietError(f"Failed to update an inode header: {strerror(e.result)}",
                             EXIT_FAILURE) from None
    return EXIT_SUCCESS


# name[256], tag[256], create_time, snap_ctime, vm_clock_nsec, then vdi_size
_VDI_SIZE_OFFSET = 256 + 256 + 8 * 3


# ---- object ----

def _object_map(inode: VdiInode, index: int | None) -> None:
    click.echo("Index       VID")
    if index is not None:
        click.echo(f"{index:08d} {inode.owner(index):8x}")
        return
    for idx, vid in inode.mapped():
        click.echo(f"{idx:08d} {vid:8x}")


def _object_location(c: SheepClient, inode: VdiInode, index: int | None) -> int:
    from sheepblk.placement import ring_for

    nodes = sort_nodes(c.node_list())
    hdr = inode.header
    if index is None:
        oid = vid_to_vdi_oid(hdr.vdi_id)
        click.echo(f"Looking for the inode object 0x{hdr.vdi_id:x} with {len(nodes)} nodes\n")
    else:
        if index >= (1 << 32):
            click.echo("The offset is too large!")
            return EXIT_FAILURE
        owner = inode.owner(index)
        if not owner:
            click.echo(f"The inode object 0x{hdr.vdi_id:x} idx {index} is not allocated")
            return EXIT_SUCCESS
        oid = vid_to_data_oid(owner, index)
        click.echo(f"Looking for the object 0x{oid:x} (vid 0x{hdr.vdi_id:x} idx {index}, "
                   f"{hdr.nr_copies} copies) with {len(nodes)} nodes\n")
    for n in nodes:
        addr = node_addr(n.nid)
        try:
            with Target.node_client(n.nid) as nc:
                rsp, _ = nc.request(Op.EXIST, ObjArgs(oid=oid).pack(), check=False)
        except ClientError:
            continue
        if rsp.result == Res.SUCCESS:
            click.echo(f"{addr} has the object")
        elif rsp.result == Res.NO_OBJ:
            click.echo(f"{addr} doesn't have the object")
        elif rsp.result in (Res.OLD_NODE_VER, Res.NEW_NODE_VER):
            click.echo("The node list has changed: please try again", err=True)
        else:
            click.echo(f"{addr}: hit an unexpected error ({strerror(rsp.result)})", err=True)
    copies = hdr.nr_copies
    if len(nodes) < copies:
        click.echo(f"\nBecause number of nodes ({len(nodes)}) is less than number of copies "
                   f"({copies}), the object should be located at every nodes.")
    else:
        _, logs = c.stat_cluster()
        owners = ring_for(nodes, logs[0].flags if logs else 0).oid_to_nodes(oid, copies)
        click.echo("\nAccording to sheepdog algorithm, the object should be located at:")
        click.echo(" ".join(node_addr(n.nid) for n in owners))
    return EXIT_SUCCESS


def _dump_inode(path: str) -> int:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise QuietError(f"failed to open inode object file: {e.strerror}", EXIT_FAILURE) from None
    if len(data) < SD_INODE_HEADER_SIZE:
        raise QuietError("failed to read inode object file: too short", EXIT_FAILURE)
    inode = Inode.unpack(data)
    h = inode.header
    lines = [f"name: {h.name}", f"tag: {h.tag}", f"create_time: {h.create_time:x}",
             f"snap_ctime: {h.snap_ctime:x}", f"vm_clock_nsec: {h.vm_clock_nsec:x}",
             f"vdi_size: {h.vdi_size}", f"vm_state_size: {h.vm_state_size}",
             f"copy_policy: {h.copy_policy}", f"store_policy: {h.store_policy}",
             f"nr_copies: {h.nr_copies}", f"block_size_shift: {h.block_size_shift}",
             f"snap_id: {h.snap_id}", f"vdi_id: {h.vdi_id:x}",
             f"parent_vdi_id: {h.parent_vdi_id:x}", f"btree_counter: {h.btree_counter}",
             "data_vdi_id:"]
    used = [(i, v) for i, v in enumerate(inode.data_vdi_id) if v]
    lines += [f"{i}: {v:x}" for i, v in used]
    lines.append("gref:")
    for i, v in used:
        off = GREF_OFFSET + 8 * i
        gen, count = struct.unpack_from("<II", data, off) if off + 8 <= len(data) else (0, 0)
        lines.append(f"{i}: {v:x}, {gen}, {count}")
    click.echo("\n".join(lines))
    return EXIT_SUCCESS


def _parse_index(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 16) if text.startswith("0x") else int(text, 10)
    except ValueError:
        raise QuietError("The index must be a decimal integer or a hexadecimal integer "
                         "started with 0x", EXIT_FAILURE) from None


@vdi.command("object")
@click.argument("words", nargs=-1, required=True, metavar="[location|map|dump-inode] NAME")
@click.option("-i", "--index", "index_s", metavar="IDX",
              help="specify the index of data objects")
@snapshot_option
@target_options
def object_(target: Target, words: tuple[str, ...], index_s: str | None,
            snapshot: str | None) -> int:
    """show object information in the image (location, map, dump-inode;
    `vdi object [-i IDX] NAME` is `location`, as in older dog)"""
    subs = ("location", "map", "dump-inode")
    if len(words) == 2 and words[0] in subs:
        sub, name = words
    elif len(words) == 1:
        sub, name = "location", words[0]
    else:
        raise QuietError("Usage: dog vdi object {location|map|dump-inode} [-i index] "
                         "[-s snapshot] <vdiname>", EXIT_USAGE)
    index = _parse_index(index_s)
    if sub == "dump-inode":
        return _dump_inode(name)
    with target.client() as c:
        inode = read_vdi(c, name, snapshot)
        if sub == "map":
            _object_map(inode, index)
            return EXIT_SUCCESS
        return _object_location(c, inode, index)


@vdi.command("check")
@click.argument("name")
@click.option("-e", "--exist", is_flag=True,
              help="only check objects exist or not, neither comparing nor repairing")
@snapshot_option
@target_options
def check(target: Target, name: str, exist: bool, snapshot: str | None) -> int:
    """check and repair image's consistency"""
    with target.client() as c:
        inode = read_vdi(c, name, snapshot)
        nodes = sort_nodes(c.node_list())
        if exist:
            return EXIT_SUCCESS if check_exist(c, nodes, inode) else EXIT_FAILURE
        check_vdi(c, nodes, inode)
    return EXIT_SUCCESS
