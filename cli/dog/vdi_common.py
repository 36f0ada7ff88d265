"""What the vdi commands share: name checks, look-ups with dog's wording."""

from __future__ import annotations

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.client.hyper import Index
from sheepblk.proto import (
    SD_INODE_HEADER_SIZE,
    SD_MAX_VDI_LEN,
    SD_MAX_VDI_TAG_LEN,
    Res,
    strerror,
    vid_to_vdi_oid,
)

from .errors import EXIT_FAILURE, EXIT_MISSING, EXIT_USAGE, QuietError
from .inodes import VdiInode, read_inode
from .options import parse_snapshot
from .vdi_locks import LOCK_UNLOCKED, vdi_states

# How many index entries one inode write clears when deleting (dog's
# NR_BATCHED_DISCARD).
NR_BATCHED_DISCARD = 128


def check_name(name: str, what: str = "VDI name") -> str:
    """Sheepdog keeps names in 256-byte NUL-terminated fields; C dog would
    silently cut a longer name, we refuse it."""
    raw = name.encode()
    if not raw:
        raise QuietError(f"{what} must not be empty", EXIT_USAGE)
    if b"\0" in raw:
        raise QuietError(f"{what} must not contain NUL", EXIT_USAGE)
    if len(raw) >= SD_MAX_VDI_LEN:
        raise QuietError(f"{what} is too long: {len(raw)} bytes, at most "
                         f"{SD_MAX_VDI_LEN - 1}", EXIT_USAGE)
    return name


def check_tag(tag: str) -> str:
    if len(tag.encode()) >= SD_MAX_VDI_TAG_LEN:
        raise QuietError(f"Snapshot tag is too long: at most {SD_MAX_VDI_TAG_LEN - 1} bytes",
                         EXIT_USAGE)
    return tag


def missing_code(result: int) -> int:
    return EXIT_MISSING if result in (Res.NO_VDI, Res.NO_TAG) else EXIT_FAILURE


def open_failed(name: str, snapid: int, tag: str, result: int, code: int = EXIT_FAILURE
                ) -> QuietError:
    return QuietError(f"Failed to open VDI {name} (snapshot id: {snapid} snapshot tag: {tag})"
                      f": {strerror(result)}", code)


def find_vid(c: SheepClient, name: str, snapid: int = 0, tag: str = "") -> int:
    """The vid of the working VDI `name`, or of its snapshot by id or tag."""
    check_name(name)
    check_tag(tag)
    try:
        return c.lookup_vdi(name, tag, snapid).vid
    except SheepdogError as e:
        raise open_failed(name, snapid, tag, e.result) from None


def read_vdi(c: SheepClient, name: str, snapshot: str | None = None,
             with_index: bool = True) -> VdiInode:
    """dog's read_vdi_obj(): look the VDI up and read its inode."""
    snapid, tag = parse_snapshot(snapshot)
    vid = find_vid(c, name, snapid, tag)
    try:
        return read_inode(c, vid, with_index)
    except SheepdogError:
        if snapid:
            msg = f"Failed to read a snapshot {name}:{snapid}"
        elif tag:
            msg = f"Failed to read a snapshot {name}:{tag}"
        else:
            msg = f"Failed to read a vdi {name}"
        raise QuietError(msg, EXIT_FAILURE) from None


def create_failed(name: str, e: SheepdogError) -> QuietError:
    return QuietError(f"Failed to create VDI {name}: {strerror(e.result)}", EXIT_FAILURE)


def _locked(c: SheepClient, vid: int) -> bool:
    states = vdi_states(c)
    if states is None:
        return False
    st = states.get(vid)
    return st is not None and st.lock_state != LOCK_UNLOCKED


def delete_vdi(c: SheepClient, name: str, snapid: int = 0, tag: str = "") -> None:
    """As dog: clear the inode's data_vdi_id[] (so the daemons drop their
    references to the objects), then SD_OP_DEL_VDI. A locked VDI, one a
    VM has open, is refused before anything changes."""
    check_name(name)
    try:
        vid = c.lookup_vdi(name, tag, snapid).vid
    except SheepdogError as e:
        raise open_failed(name, snapid, tag, e.result, missing_code(e.result)) from None
    if _locked(c, vid):
        raise QuietError(f"Failed to delete {name}: {strerror(Res.VDI_LOCKED)}", EXIT_FAILURE)
    try:
        inode = read_inode(c, vid, with_index=False)
        if inode.header.store_policy == 0:
            # A hyper volume's data_vdi_id[] is a B-tree, not entries to
            # zero (C's dog would write zeros into it): the daemon frees
            # its objects on DEL_VDI.
            _clear_index(c, vid, c.read_index(inode.header))
    except SheepdogError:
        raise QuietError(f"failed to read inode object: {vid_to_vdi_oid(vid):x}",
                         EXIT_FAILURE) from None
    try:
        c.delete_vdi(name, tag, snapid)
    except SheepdogError as e:
        raise QuietError(f"Failed to delete {name}: {strerror(e.result)}",
                         missing_code(e.result)) from None


def _clear_index(c: SheepClient, vid: int, index: Index) -> None:
    """Zero the mapped entries of a flat index, NR_BATCHED_DISCARD at a
    time, as dog's do_vdi_delete."""
    i, n = 0, len(index)
    while i < n:
        while i < n and not index[i]:
            i += 1
        start, filled = i, 0
        while i < n and filled < NR_BATCHED_DISCARD:
            if index[i]:
                index[i] = 0
                filled += 1
            i += 1
        if start < n:
            try:
                c.write_obj(vid_to_vdi_oid(vid), bytes(4 * (i - start)),
                            SD_INODE_HEADER_SIZE + 4 * start)
            except SheepdogError:
                raise QuietError("failed to update inode for discarding objects: "
                                 f"{vid_to_vdi_oid(vid):x}", EXIT_FAILURE) from None
