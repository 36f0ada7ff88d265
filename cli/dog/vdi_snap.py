"""`vdi snapshot`, `vdi clone`, `vdi rollback`: the copy-on-write family.

How dog does it, and so how we do it (real sheep expect this sequence):
- snapshot: write the tag into the working VDI's inode, then NEW_VDI with
  snapid=1 and base = the working vid; the daemon turns the old working
  VDI into the snapshot and gives the name a new working VDI that shares
  every object with it.
- clone: NEW_VDI of another name with base = the snapshot's vid (objects
  shared until written), or with -n/-P a full copy.
- rollback: delete the working VDI, then create it again from the snapshot.
"""

from __future__ import annotations

import click

from sheepblk.client import SheepClient, SheepdogError, Vdi
from sheepblk.proto import SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN, Res, strerror, vid_to_vdi_oid

from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_USAGE, QuietError
from .inodes import VdiInode, read_inode
from .options import (
    Target,
    confirm,
    force_option,
    parse_snapshot,
    raw_option,
    snapshot_option,
    target_options,
    verbose_option,
)
from .vdi_common import check_name, check_tag, create_failed, delete_vdi, read_vdi

# Objects copied per step of a full clone (several in flight at once).
COPY_CHUNK_OBJECTS = 8
ROLLBACK_PROMPT = ("This operation discards any changes made since the previous\n"
                   "snapshot was taken.  Continue? [yes/no]: ")


def _working_for_snapshot(c: SheepClient, name: str, tag: str) -> VdiInode:
    """The working VDI to snapshot; refuses a tag that is taken."""
    try:
        vid = c.lookup_vdi(name, tag).vid
    except SheepdogError as e:
        if e.result != Res.NO_TAG:
            raise QuietError(f"Failed to create snapshot for {name}: {strerror(e.result)}",
                             EXIT_FAILURE) from None
        return read_vdi(c, name, None, with_index=False)
    inode = read_inode(c, vid, with_index=False)
    if inode.header.is_snapshot:
        raise QuietError(f"Failed to create snapshot for {name}, maybe snapshot id (0) or "
                         f"tag ({tag}) is existed", EXIT_FAILURE)
    return inode


@click.command("snapshot")
@click.argument("name")
@snapshot_option
@click.option("-R", "--reduce-identical-snapshots", "reduce", is_flag=True,
              help="do not create snapshot if working VDI doesn't have its own objects")
@raw_option
@verbose_option
@target_options
def snapshot(target: Target, name: str, snapshot: str | None, reduce: bool, raw: bool,
             verbose: bool) -> int:
    """create a snapshot"""
    check_name(name)
    snapid, tag = parse_snapshot(snapshot)
    if snapid:
        raise QuietError("Please specify a non-integer value for a snapshot tag name",
                         EXIT_USAGE)
    check_tag(tag)
    with target.client() as c:
        inode = _working_for_snapshot(c, name, tag)
        hdr = inode.header
        if hdr.store_policy:
            raise QuietError("creating a snapshot of hypervolume is not supported", EXIT_FAILURE)
        if reduce and not read_inode(c, hdr.vdi_id).stat()[0]:
            if verbose:
                click.echo(f"VDI {name} doesn't have its own objects, skipping creation of "
                           "snapshot", err=True)
            return EXIT_SUCCESS
        try:
            c.write_obj(vid_to_vdi_oid(hdr.vdi_id), tag.encode().ljust(SD_MAX_VDI_TAG_LEN, b"\0"),
                        SD_MAX_VDI_LEN)
            new_vid = c.create_vdi(name, hdr.vdi_size, copies=hdr.nr_copies,
                                   copy_policy=hdr.copy_policy,
                                   block_size_shift=hdr.block_size_shift,
                                   base_vid=hdr.vdi_id, snapshot=True,
                                   store_policy=hdr.store_policy)
        except SheepdogError as e:
            raise create_failed(name, e) from None
    if verbose:
        click.echo(f"{new_vid:x} {hdr.vdi_id:x}" if raw else
                   f"new VID of original VDI: {new_vid:x}, "
                   f"VDI ID of newly created snapshot: {hdr.vdi_id:x}")
    return EXIT_SUCCESS


def copy_objects(c: SheepClient, src: VdiInode, dst_name: str, prealloc: bool) -> None:
    """Give the new VDI its own copy of every object of `src` (and, with
    `prealloc`, zeros for the holes)."""
    with Vdi(c, dst_name) as dst:
        osize = dst.object_size
        nr = src.header.nr_objects
        buf = bytearray(osize * COPY_CHUNK_OBJECTS)
        view = memoryview(buf)
        idx = 0
        while idx < nr:
            want = bool(src.index[idx]) or prealloc
            if not want:
                idx += 1
                continue
            end = idx
            while (end < nr and end - idx < COPY_CHUNK_OBJECTS
                   and (bool(src.index[end]) or prealloc)):
                end += 1
            start = idx * osize
            length = min(end * osize, src.header.vdi_size) - start
            _read_from(c, src, view[:length], idx, end, osize)
            dst.pwrite(view[:length], start)
            idx = end


def _read_from(c: SheepClient, src: VdiInode, view: memoryview, first: int, end: int,
               osize: int) -> None:
    from sheepblk.proto import vid_to_data_oid

    for idx in range(first, end):
        pos = (idx - first) * osize
        part = view[pos:pos + osize]
        owner = src.index[idx]
        if owner:
            c.read_obj(vid_to_data_oid(owner, idx), len(part), 0, rbuf=part)
        else:
            part[:] = bytes(len(part))


@click.command("clone")
@click.argument("src")
@click.argument("dst", required=False)
@snapshot_option
@click.option("-P", "--prealloc", is_flag=True, help="preallocate all the data objects")
@click.option("-n", "--no-share", is_flag=True, help="share nothing with its parent")
@raw_option
@verbose_option
@target_options
def clone(target: Target, src: str, dst: str | None, snapshot: str | None, prealloc: bool,
          no_share: bool, raw: bool, verbose: bool) -> int:
    """clone an image"""
    if not dst:
        raise QuietError("Destination VDI name must be specified", EXIT_USAGE)
    check_name(dst)
    if not snapshot:
        raise QuietError("Only snapshot VDIs can be cloned: please specify the '-s' option",
                         EXIT_USAGE)
    with target.client() as c:
        base = read_vdi(c, src, snapshot)
        hdr = base.header
        try:
            new_vid = c.create_vdi(dst, hdr.vdi_size, copies=hdr.nr_copies,
                                   copy_policy=hdr.copy_policy,
                                   block_size_shift=hdr.block_size_shift,
                                   base_vid=0 if no_share else hdr.vdi_id,
                                   store_policy=hdr.store_policy)
        except SheepdogError as e:
            raise create_failed(dst, e) from None
        if prealloc or no_share:
            copy_objects(c, base, dst, prealloc)
    if verbose:
        click.echo(f"{new_vid:x}" if raw else f"VDI ID of newly created clone: {new_vid:x}")
    return EXIT_SUCCESS


@click.command("rollback")
@click.argument("name")
@snapshot_option
@force_option
@raw_option
@verbose_option
@target_options
def rollback(target: Target, name: str, snapshot: str | None, force: bool, raw: bool,
             verbose: bool) -> int:
    """rollback to a snapshot"""
    if not snapshot:
        raise QuietError("Please specify the '-s' option", EXIT_USAGE)
    with target.client() as c:
        base = read_vdi(c, name, snapshot, with_index=False)
        hdr = base.header
        if not force and not confirm(ROLLBACK_PROMPT):
            return EXIT_SUCCESS
        try:
            delete_vdi(c, name)
        except QuietError as e:
            raise QuietError(f"Failed to delete the current state: {e.message}",
                             EXIT_FAILURE) from None
        try:
            new_vid = c.create_vdi(name, hdr.vdi_size, copies=hdr.nr_copies,
                                   copy_policy=hdr.copy_policy,
                                   block_size_shift=hdr.block_size_shift,
                                   base_vid=hdr.vdi_id, store_policy=hdr.store_policy)
        except SheepdogError as e:
            raise create_failed(name, e) from None
    if verbose:
        click.echo(f"{new_vid:x}" if raw else f"New VDI ID of rollbacked VDI: {new_vid:x}")
    return EXIT_SUCCESS
