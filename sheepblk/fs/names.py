"""File names under volume/ and the names written to vdi/mount: pure rules.

A working VDI is the file `NAME`; a snapshot is `NAME@TAG`, or `NAME@ID`
(its snapshot id) when it has no tag. Why `@`: it reads like QEMU's
`sheepdog:NAME:TAG` without colliding with the colon that tools such as
`scp` and `rsync` treat as a host separator. A VDI whose name cannot be a
file name (it holds `/` or NUL, or is `.`/`..`) is not shown.
"""

from __future__ import annotations

from typing import NamedTuple

from ..proto import InodeHeader
from ..proto.constants import SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN

SNAP_SEP = "@"


class BadName(ValueError):
    """A name sheepfs refuses (path tricks, NUL, too long, empty)."""


class VolumeRef(NamedTuple):
    """What a file name under volume/ asks for: a working VDI (tag "" and
    snapid 0) or one of its snapshots, by tag or by snapshot id."""

    name: str
    tag: str = ""
    snapid: int = 0

    @property
    def is_snapshot(self) -> bool:
        return bool(self.tag or self.snapid)


def check_vdi_name(name: str) -> str:
    """Return `name` if it can be a VDI name sheepfs shows; else BadName."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise BadName("empty VDI name")
    if b"\0" in raw or b"/" in raw or name in (".", ".."):
        raise BadName(f"VDI name {name!r} holds '/' or NUL or is '.'/'..'")
    if len(raw) >= SD_MAX_VDI_LEN:
        raise BadName(f"VDI name longer than {SD_MAX_VDI_LEN - 1} bytes")
    return name


def file_name(hdr: InodeHeader) -> str | None:
    """The file name under volume/ for an inode, or None if it has none."""
    try:
        check_vdi_name(hdr.name)
    except BadName:
        return None
    if not hdr.is_snapshot:
        return hdr.name
    sel = hdr.tag if hdr.tag and "/" not in hdr.tag else str(hdr.snap_id)
    return f"{hdr.name}{SNAP_SEP}{sel}"


def candidates(fname: str) -> list[VolumeRef]:
    """The VDIs a file name may mean, in the order to try them.

    A name with `@` may be a working VDI whose name holds `@`, so the whole
    name is tried first; then the part after the last `@` as a tag; then,
    if numeric, as a snapshot id.
    """
    check_vdi_name(fname)
    out = [VolumeRef(fname)]
    base, sep, sel = fname.rpartition(SNAP_SEP)
    if sep and base and sel:
        if len(sel.encode()) < SD_MAX_VDI_TAG_LEN:
            out.append(VolumeRef(base, tag=sel))
        if sel.isdigit() and sel.isascii():
            out.append(VolumeRef(base, snapid=int(sel)))
    return out


def parse_control(data: bytes) -> list[str]:
    """Names written to vdi/mount or vdi/unmount: one per line, as `echo`
    writes them. Raises BadName for anything but valid VDI names."""
    if b"\0" in data:
        raise BadName("NUL in VDI name")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise BadName("VDI name is not UTF-8") from e
    names = [line.strip("\r") for line in text.split("\n")]
    names = [n for n in names if n]
    if not names:
        raise BadName("no VDI name given")
    return [check_vdi_name(n) for n in names]
