"""How much room a node's store has, counted as C sheep counts it.

Why not the file system's own size and use: Sheepdog's STAT_SHEEP (what
`dog node info` shows) and its reweighting (`dog cluster reweight`) count
a disk as the room left on it plus the bytes its objects take
(md_get_size), so other files on the disk, a log or a stray dd, shrink
the node instead of counting as used by it. Sheepdog's test 113 fills a
disk with such a file and expects exactly that.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..store import ObjectStore
from ..store.md import MdStore

_HEX = frozenset("0123456789abcdef")


def _object_bytes(obj_dir: Path) -> int:
    """The blocks the objects in `obj_dir` take (stale copies and
    temporary files, in their own directories, are not counted)."""
    total = 0
    try:
        with os.scandir(obj_dir) as it:
            for e in it:
                if len(e.name) == 16 and set(e.name) <= _HEX:
                    try:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        continue  # removed meanwhile
    except FileNotFoundError:
        pass
    return total


def store_usage(store: ObjectStore) -> tuple[int, int]:
    """(size, free) in bytes: free is the room left on the disks, size
    that plus what the objects take. Blocking (reads directories)."""
    if isinstance(store, MdStore):
        free = used = 0
        for _i, obj_dir, disk_free, _used in store.info():
            free += disk_free
            used += _object_bytes(obj_dir)
        return free + used, free
    size, used = store.space()
    return size, size - used
