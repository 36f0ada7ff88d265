"""The `tree` backend: the plain backend's files, spread over subdirectories.

Sheepdog's tree store (sheep/store/tree_store.c) keeps a VDI's objects
together and no directory huge: inode, vmstate and attribute objects go to
obj/meta/, every other object (data, ledger, btree) to obj/XX/, XX being
the low byte of its VDI id in two lower-case hex digits (bits 32-39 of the
oid). The 257 directories are made when the store opens, as C's tree_init
does, so a creation never has to make (and fsync) a parent first. Stale
copies (obj/.stale/OID.EPOCH) and staging (obj/.tmp/) are the plain
backend's, so recovery and `dog node md info` see the same paths.

An object's bytes sit in its file as in `plain` (sendfile reads, sparse
files); durability is plain's too: a synced write is fdatasync'ed, a
creation's name is made durable by an fsync of the directory it was
renamed into, a removal's at the next flush.
"""

from __future__ import annotations

import os

from ..proto.oid import VDI_SPACE_SHIFT, is_vdi_attr_obj, is_vdi_obj, is_vmstate_obj
from .filestore import fsync_dir, store_error
from .plain import PlainStore

META_DIR = "meta"
_TREE_DIRS = tuple(f"{i:02x}" for i in range(256))


def tree_subdir(oid: int) -> str:
    """The subdirectory of obj/ that holds `oid` (tree_store.c's
    get_store_path)."""
    if is_vdi_obj(oid) or is_vmstate_obj(oid) or is_vdi_attr_obj(oid):
        return META_DIR
    return _TREE_DIRS[(oid >> VDI_SPACE_SHIFT) & 0xFF]


class TreeStore(PlainStore):
    """Resource handling and error handling: as PlainStore. The directory
    fsyncs of creations are shared per directory (FileStore)."""

    name = "tree"

    def __init__(self, root: str | os.PathLike[str], *, nosync: bool = False,
                 flat: bool = False) -> None:
        super().__init__(root, nosync=nosync, flat=flat)
        base = str(self.obj_dir)
        self._dirs = [f"{base}/{d}" for d in (META_DIR, *_TREE_DIRS)]
        made = False
        for d in self._dirs:
            try:
                os.mkdir(d, 0o755)
                made = True
            except FileExistsError:
                pass
            except OSError as e:
                raise store_error(e, f"mkdir {d}") from e
        if made and not nosync:
            # A subdirectory whose name is lost in a power cut would take
            # the objects renamed into it along.
            try:
                fsync_dir(base)
            except OSError as e:
                raise store_error(e, f"fsync {base}") from e

    def _dir_of(self, oid: int) -> str:
        return f"{self.obj_dir}/{tree_subdir(oid)}"

    def _object_dirs(self) -> list[str]:
        return list(self._dirs)
