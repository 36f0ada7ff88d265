"""`vdi setattr`, `vdi getattr` and `vdi lock list|unlock`."""

from __future__ import annotations

import os
import sys

import click

from sheepblk.client import SheepClient, SheepdogError
from sheepblk.proto import Flag, Op, Res, VdiArgs, VdiAttr, VdiResult, strerror, vid_to_attr_oid
from sheepblk.proto.constants import (
    SD_FLAG_CMD_CREAT,
    SD_MAX_VDI_ATTR_KEY_LEN,
    SD_MAX_VDI_ATTR_VALUE_LEN,
)
from sheepblk.proto.vdi_attr import SD_ATTR_OBJ_SIZE

from .errors import (
    EXIT_EXISTS,
    EXIT_FAILURE,
    EXIT_MISSING,
    EXIT_SUCCESS,
    EXIT_SYSFAIL,
    EXIT_USAGE,
    QuietError,
)
from .format import vdi_kind
from .inodes import walk_vdis
from .options import Target, parse_snapshot, snapshot_option, target_options
from .vdi_common import check_name, find_vid
from .vdi_locks import (
    LOCK_LOCKED,
    LOCK_SHARED,
    LOCK_UNLOCKED,
    SHARED_STATE_NAMES,
    node_id_str,
    vdi_states,
)


def find_attr(c: SheepClient, name: str, snapid: int, tag: str, key: str,
              value: bytes = b"", *, create: bool = False, excl: bool = False,
              delete: bool = False) -> tuple[int, int]:
    """SD_OP_GET_VDI_ATTR: (vid, attribute oid). Creates (or deletes) the
    attribute with the flags; raises SheepdogError."""
    check_name(name)
    if len(key.encode()) >= SD_MAX_VDI_ATTR_KEY_LEN:
        raise QuietError(f"Attribute key is too long: at most {SD_MAX_VDI_ATTR_KEY_LEN - 1} bytes",
                         EXIT_USAGE)
    attr = VdiAttr(name, tag, 0, snapid, key, value)
    flags = 0
    if create:
        flags |= SD_FLAG_CMD_CREAT
    if excl:
        flags |= Flag.CMD_EXCL
    if delete:
        flags |= Flag.CMD_DEL
    rsp, _ = c.request(Op.GET_VDI_ATTR, VdiArgs(snapid=snapid).pack(), flags=flags,
                       data=attr.pack())
    r = VdiResult.unpack(rsp.args)
    return r.vdi_id, vid_to_attr_oid(r.vdi_id, r.attr_id)


@click.command("setattr")
@click.argument("name")
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option("-d", "--delete", is_flag=True, help="delete a key")
@click.option("-x", "--exclusive", is_flag=True, help="fail if the key exists")
@snapshot_option
@target_options
def setattr_cmd(target: Target, name: str, key: str | None, value: str | None,
                delete: bool, exclusive: bool, snapshot: str | None) -> int:
    """set a VDI attribute (the value from stdin when not given)"""
    if key is None:
        raise QuietError("Please specify the attribute key", EXIT_USAGE)
    snapid, tag = parse_snapshot(snapshot)
    data = b""
    if value is not None:
        data = os.fsencode(value)
    elif not delete:
        data = sys.stdin.buffer.read(SD_MAX_VDI_ATTR_VALUE_LEN)
    # C dog takes the value as a C string: it ends at the first NUL.
    data = data.split(b"\0", 1)[0]
    with target.client() as c:
        try:
            find_attr(c, name, snapid, tag, key, data, create=not delete,
                      excl=exclusive, delete=delete)
        except SheepdogError as e:
            if e.result == Res.VDI_EXIST:
                raise QuietError(f"The attribute '{key}' already exists", EXIT_EXISTS) from None
            if e.result == Res.NO_OBJ:
                raise QuietError(f"Attribute '{key}' not found", EXIT_MISSING) from None
            if e.result == Res.NO_VDI:
                raise QuietError("VDI not found", EXIT_MISSING) from None
            raise QuietError(f"Failed to set attribute: {strerror(e.result)}",
                             EXIT_FAILURE) from None
    return EXIT_SUCCESS


@click.command("getattr")
@click.argument("name")
@click.argument("key", required=False)
@snapshot_option
@target_options
def getattr_cmd(target: Target, name: str, key: str | None, snapshot: str | None) -> int:
    """get a VDI attribute (its value goes to stdout as is)"""
    if key is None:
        raise QuietError("Please specify the attribute key", EXIT_USAGE)
    snapid, tag = parse_snapshot(snapshot)
    with target.client() as c:
        try:
            _, oid = find_attr(c, name, snapid, tag, key)
        except SheepdogError as e:
            if e.result == Res.NO_OBJ:
                raise QuietError(f"Attribute '{key}' not found", EXIT_MISSING) from None
            if e.result == Res.NO_VDI:
                raise QuietError("VDI not found", EXIT_MISSING) from None
            raise QuietError(f"Failed to find attribute oid: {strerror(e.result)}",
                             EXIT_MISSING) from None
        try:
            raw = c.read_obj(oid, SD_ATTR_OBJ_SIZE)
        except SheepdogError as e:
            raise QuietError(f"Failed to read attribute oid: {strerror(e.result)}",
                             EXIT_SYSFAIL) from None
    out = sys.stdout.buffer
    out.write(VdiAttr.unpack(raw).value)
    out.flush()
    return EXIT_SUCCESS


@click.group("lock")
def lock() -> None:
    """See 'dog vdi lock' for more information"""


@lock.command("list")
@target_options
def lock_list(target: Target) -> int:
    """list locked VDIs"""
    with target.client() as c:
        states = vdi_states(c)
        if states is None:
            raise QuietError("Failed to get VDI state", EXIT_SYSFAIL)
        click.echo("  Name         Id  VDI id  Tag            Owner node(s)")
        for inode in walk_vdis(c):
            info = states.get(inode.vid)
            if info is None or info.lock_state == LOCK_UNLOCKED:
                continue
            hdr = inode.header
            snapid = hdr.snap_id if hdr.is_snapshot else 0
            line = f"{vdi_kind(hdr, False)} {hdr.name:<8s}  {snapid:5d}  {hdr.vdi_id:6x}  {hdr.tag:<13s} "
            if info.lock_state == LOCK_LOCKED:
                line += f" {node_id_str(info.state.lock_owner)}"
            else:
                for nid, st in info.participants:
                    line += f" {node_id_str(nid)}({SHARED_STATE_NAMES.get(st, f'UNKNOWN {st}, BUG!')})"
            click.echo(line)
    return EXIT_SUCCESS


def describe(name: str, snapid: int, tag: str, vid: int = 0) -> str:
    extra = []
    if snapid:
        extra.append(f"snapid={snapid}")
    elif tag:
        extra.append(f"tag={tag}")
    if vid:
        extra.append(f"vid={vid:x}")
    return f"{name} ({', '.join(extra)})" if extra else name


@lock.command("unlock")
@click.argument("name", required=False)
@snapshot_option
@target_options
def lock_unlock(target: Target, name: str | None, snapshot: str | None) -> int:
    """unlock locked VDI forcibly"""
    if not name:
        raise QuietError("VDI name must be specified", EXIT_USAGE)
    snapid, tag = parse_snapshot(snapshot)
    with target.client() as c:
        try:
            vid = c.lookup_vdi(check_name(name), tag, snapid).vid
        except SheepdogError as e:
            raise QuietError(f"Failed to find VDI {describe(name, snapid, tag)}: "
                             f"{strerror(e.result)}", EXIT_FAILURE) from None
        desc = describe(name, snapid, tag, vid)
        states = vdi_states(c)
        if states is None:
            raise QuietError("Failed to get VDI state", EXIT_SYSFAIL)
        info = states.get(vid)
        if info is None:
            raise QuietError(f"Failed to find VDI state {desc}", EXIT_SYSFAIL)
        if info.lock_state == LOCK_UNLOCKED:
            raise QuietError(f"VDI {desc} is not locked", EXIT_FAILURE)
        if info.lock_state not in (LOCK_LOCKED, LOCK_SHARED):
            raise QuietError(f"VDI {desc} unknown lock state ({info.lock_state})", EXIT_SYSFAIL)
        try:
            c.release_vdi(vid, shared=info.lock_state == LOCK_SHARED)
        except SheepdogError as e:
            raise QuietError(f"Failed to unlock VDI {desc}: {strerror(e.result)}",
                             EXIT_FAILURE) from None
    return EXIT_SUCCESS


__all__ = ["find_attr", "find_vid", "getattr_cmd", "lock", "setattr_cmd"]
