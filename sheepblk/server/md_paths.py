"""Which paths a `dog node md plug|unplug` request may name.

Why so strict: the paths come from the wire, from any client that reaches
the port. A node may create only the last directory a request names, as
Sheepdog's md_add_disk does, inside an existing one; it must never store
objects in a system directory, nest one disk in another or in its own
store, or lose its last disk. Every refusal says why (DiskPathRefused),
and the caller logs it with the path escaped (`shown`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .wire_text import shown

# Directories a disk may be neither of nor inside.
SYSTEM_DIRS = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/boot", "/run"))
# What a node keeps in its store directory: a disk there may be none of
# these nor inside one (other subdirectories are fine, as Sheepdog's
# `sheep STORE,STORE/d0,STORE/d1` layout has them).
STORE_ENTRIES = ("config", "epoch", "obj", "sheep.log", "sheep.pid", "sock")
# A disk must have at least this much room when it is plugged.
MIN_FREE_BYTES = 64 << 20
# One request names at most this many paths (a node has at most 64 disks).
MAX_PATHS = 64


class DiskPathRefused(Exception):
    """A plug or unplug path that breaks a rule; the message says which."""


def parse(data: bytes | memoryview | None) -> list[str]:
    """The comma-separated, NUL-terminated path list of the payload."""
    raw = bytes(data or b"").split(b"\0", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DiskPathRefused(f"not UTF-8: {shown(raw)}") from None
    paths = [p.strip() for p in text.split(",") if p.strip()]
    if not paths:
        raise DiskPathRefused("no path given")
    if len(paths) > MAX_PATHS:
        raise DiskPathRefused(f"{len(paths)} paths, at most {MAX_PATHS}")
    for p in paths:
        if not os.path.isabs(p):
            raise DiskPathRefused(f"not an absolute path: {shown(p)}")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in p):
            raise DiskPathRefused(f"control characters in the path: {shown(p)}")
    return paths


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def check_plug(paths: Sequence[str], disks: Sequence[Path], store_root: Path) -> list[Path]:
    """The directories to plug, resolved (symlinks followed); disks already
    plugged are left out. DiskPathRefused for the first that breaks a rule:
    it must be a writable directory with room, or a new name in one (the
    store creates it), and be neither a system directory nor inside one,
    nor nested with a disk of this node (nor contain one), nor contain
    the node's store directory or sit in one of the store's own entries."""
    plugged = [Path(os.path.realpath(d)) for d in disks]
    root = Path(os.path.realpath(store_root))
    out: list[Path] = []
    for p in paths:
        if os.path.isdir(p):
            real = Path(os.path.realpath(p))
            there = real
        elif os.path.lexists(p) or not os.path.isdir(os.path.dirname(p)):
            raise DiskPathRefused(f"not an existing directory: {shown(p)}")
        else:
            there = Path(os.path.realpath(os.path.dirname(p)))
            real = there / os.path.basename(p)
        if real in plugged:
            continue
        if real == Path("/") or any(_inside(real, s) for s in SYSTEM_DIRS):
            raise DiskPathRefused(f"a system directory: {shown(p)}")
        if _inside(root, real) or any(_inside(real, root / e) for e in STORE_ENTRIES):
            raise DiskPathRefused(f"nested with the node's store {shown(str(root))}: {shown(p)}")
        for other in plugged + out:
            if _inside(real, other) or _inside(other, real):
                raise DiskPathRefused(f"nested with disk {shown(str(other))}: {shown(p)}")
        if not os.access(there, os.W_OK | os.X_OK):
            raise DiskPathRefused(f"not writable: {shown(p)}")
        st = os.statvfs(there)
        if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
            raise DiskPathRefused(f"less than {MIN_FREE_BYTES >> 20} MiB free: {shown(p)}")
        out.append(real)
    return out


def check_unplug(paths: Sequence[str], disks: Sequence[Path]) -> list[Path]:
    """The plugged disks the paths name. DiskPathRefused when one names no
    disk of this node, or when every disk would go."""
    by_real = {Path(os.path.realpath(d)): d for d in disks}
    out: list[Path] = []
    for p in paths:
        disk = by_real.get(Path(os.path.realpath(p)))
        if disk is None:
            raise DiskPathRefused(f"not a disk of this node: {shown(p)}")
        if disk not in out:
            out.append(disk)
    if len(out) >= len(disks):
        raise DiskPathRefused("cannot unplug the last disk of a node")
    return out
