"""`vdi backup` / `vdi restore`: incremental backups between snapshots.

The stream is Sheepdog's (dog/vdi.c), so backups move between C dog and
ours: a header {u32 version=1, u32 magic=0x11921192}, then per changed
object {u32 idx, u32 offset, u32 length, u32 reserved} and `length` bytes,
then an end record with idx = 0xffffffff. Only the sectors that differ
from the older snapshot are kept (leading and trailing equal 512-byte
sectors are trimmed).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

import click

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.proto import data_vid_offset, vid_to_data_oid, vid_to_vdi_oid

from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, EXIT_USAGE, QuietError
from .inodes import VdiInode, read_inode
from .options import Target, parse_snapshot, snapshot_option, target_options
from .progress import Progress
from .vdi_common import create_failed, delete_vdi, read_vdi

BACKUP_VERSION = 1
BACKUP_MAGIC = 0x11921192
END_IDX = 0xFFFFFFFF
SECTOR = 512
HEADER = struct.Struct("<II")
RECORD = struct.Struct("<IIII")


def compact(new: bytes | bytearray, old: bytes | bytearray) -> tuple[int, int]:
    """(offset, length) of `new` after trimming the leading and trailing
    sectors equal to `old` (as dog's compact_obj_backup)."""
    size = len(new)
    start, length = 0, size
    while length > 0 and new[start:start + SECTOR] == old[start:start + SECTOR]:
        start += SECTOR
        length -= SECTOR
    end = size
    while length > 0 and new[end - SECTOR:end] == old[end - SECTOR:end]:
        end -= SECTOR
        length -= SECTOR
    return start, max(length, 0)


def _object(c: SheepClient, vid: int, idx: int, size: int) -> bytes:
    if not vid:
        return bytes(size)
    try:
        return bytes(c.read_obj(vid_to_data_oid(vid, idx), size))
    except SheepdogError:
        raise QuietError(f"Failed to read object {vid:x}, {idx}", EXIT_FAILURE) from None


def backup_records(c: SheepClient, old: VdiInode, new: VdiInode,
                   progress: Callable[[int, int], None] = lambda done, total: None
                   ) -> Iterator[bytes]:
    """Yield the byte strings of the backup stream; `progress(done, total)`
    as each object is compared."""
    yield HEADER.pack(BACKUP_VERSION, BACKUP_MAGIC)
    osize = old.header.object_size
    total = new.header.nr_objects
    for idx in range(total):
        progress(idx + 1, total)
        from_vid = old.owner(idx)
        to_vid = new.owner(idx)
        if from_vid == to_vid:  # the same object (or both holes): nothing changed
            continue
        data = _object(c, to_vid, idx, osize)
        off, length = compact(data, _object(c, from_vid, idx, osize))
        if length:
            yield RECORD.pack(idx, off, length, 0) + data[off:off + length]
    yield RECORD.pack(END_IDX, 0, 0, 0)


@click.command("backup")
@click.argument("name")
@snapshot_option
@click.option("-F", "--from", "from_", metavar="SNAPSHOT",
              help="create a differential backup from the snapshot")
@target_options
def backup(target: Target, name: str, snapshot: str | None, from_: str | None) -> int:
    """create an incremental backup between two snapshots and output it to stdout"""
    if not snapshot or not from_:
        raise QuietError("Please specify snapshots with '-F' and '-s' options", EXIT_USAGE)
    out = sys.stdout.buffer
    with target.client() as c:
        old = read_vdi(c, name, from_)
        new = read_vdi(c, name, snapshot)
        try:
            with Progress("Backing up") as bar:
                for chunk in backup_records(c, old, new, bar):
                    out.write(chunk)
                out.flush()
                bar.finish()
        except OSError as e:
            raise QuietError(f"failed to write backup data, {e.strerror}", EXIT_SYSFAIL) from None
    return EXIT_SUCCESS


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if data is None or len(data) != n:
        raise QuietError("failed to read backup data", EXIT_SYSFAIL)
    return bytes(data)


def do_restore(c: SheepClient, name: str, snapshot: str, src: BinaryIO,
               progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Create the working VDI again from the snapshot and apply the backup;
    `progress(done, total)` by the index of the object each record is for
    (the stream has no count of its own, but its records come in order)."""
    head = src.read(HEADER.size)
    if not head or len(head) != HEADER.size or HEADER.unpack(head) != (BACKUP_VERSION, BACKUP_MAGIC):
        raise QuietError("The backup file is corrupted", EXIT_SYSFAIL)
    base = read_vdi(c, name, snapshot)
    hdr = base.header
    try:
        vid = c.create_vdi(name, hdr.vdi_size, copies=hdr.nr_copies,
                           copy_policy=hdr.copy_policy, block_size_shift=hdr.block_size_shift,
                           base_vid=hdr.vdi_id, store_policy=hdr.store_policy)
    except SheepdogError as e:
        raise create_failed(name, e) from None
    total = hdr.nr_objects
    while True:
        idx, offset, length, _ = RECORD.unpack(_read_exact(src, RECORD.size))
        if idx == END_IDX:
            progress(total, total)
            return
        progress(idx + 1, total)
        data = _read_exact(src, length)
        parent = base.owner(idx)
        try:
            c.create_and_write_obj(vid_to_data_oid(vid, idx), data, offset,
                                   cow_oid=vid_to_data_oid(parent, idx) if parent else 0,
                                   copies=hdr.nr_copies)
            c.write_obj(vid_to_vdi_oid(vid), struct.pack("<I", vid), data_vid_offset(idx))
        except SheepdogError:
            delete_vdi(c, name)
            raise QuietError("failed to restore backup", EXIT_FAILURE) from None


@click.command("restore")
@click.argument("name")
@snapshot_option
@target_options
def restore(target: Target, name: str, snapshot: str | None) -> int:
    """restore snapshot images from a backup provided in stdin"""
    if not snapshot:
        raise QuietError("We can restore a backup file only to snapshots\n"
                         "Please specify the '-s' option", EXIT_USAGE)
    snapid, tag = parse_snapshot(snapshot)
    if os.isatty(0):
        raise QuietError("stdin must be pipe", EXIT_USAGE)
    with target.client() as c:
        try:
            read_vdi(c, name, snapshot, with_index=False)
        except QuietError as e:
            # dog says why the lookup failed, then what it means here.
            click.echo(e.message, err=True)
            raise QuietError(f"Snapshot ID {snapid} or tag {tag} doesn't exist",
                             EXIT_FAILURE) from None
        current = read_vdi(c, name, None, with_index=False).header
        try:
            read_inode(c, current.parent_vdi_id, with_index=False)
        except SheepdogError:
            raise QuietError(f"Failed to read the parent of {name}", EXIT_FAILURE) from None
        try:
            delete_vdi(c, name)
        except QuietError as e:
            raise QuietError(f"Failed to delete the current state: {e.message}",
                             EXIT_FAILURE) from None
        error: QuietError | None = None
        try:
            with Progress("Restoring") as bar:
                do_restore(c, name, snapshot, sys.stdin.buffer, bar)
                bar.finish()
        except QuietError as e:
            error = e
        # As dog: take the restored state as a snapshot, so that the
        # current state the user had is the working VDI again.
        try:
            c.create_vdi(name, current.vdi_size, copies=current.nr_copies,
                         copy_policy=current.copy_policy,
                         block_size_shift=current.block_size_shift,
                         base_vid=current.parent_vdi_id, snapshot=True,
                         store_policy=current.store_policy)
        except SheepdogError as e:
            raise QuietError(f"failed to resume the current vdi: {e}", EXIT_FAILURE) from None
        if error is not None:
            raise error
    return EXIT_SUCCESS
