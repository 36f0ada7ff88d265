"""Hyper volumes (store_policy 1) through the protocol: their B-tree index
read and changed the way Sheepdog's clients do (sheepblk.proto.btree has
the layout and the algorithm; this module does the I/O).

Why a sparse index: a hyper volume spans up to 2^32 objects, so the flat
list a normal VDI's data_vdi_id[] reads into cannot hold it; `SparseIndex`
maps only the objects that have a record and reads 0 for the rest, and
callers walk `index_items` instead of enumerating every object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, overload

from ..proto import Flag, InodeHeader, vid_to_vdi_oid
from ..proto.btree import INDEX_HEADER_SIZE, BTree, BTreeError, leaf_size, meta_size
from ..proto.inode import DATA_VDI_ID_OFFSET, SD_INODE_HEADER_SIZE
from .errors import ClientError

if TYPE_CHECKING:
    from .sheep import SheepClient

# store_policy of a hyper volume (dog vdi create -y).
HYPER_VOLUME = 1
# First read of a leaf: most leaves are far smaller than their 4 MiB
# object, so their header and records come in one request this size.
LEAF_FIRST_READ = 64 << 10


class CorruptIndex(ClientError):
    """A hyper volume's B-tree that cannot be read or grown (bad magic or
    depth, or full): Sheepdog's tools panic there, ours fail the one VDI."""


@contextmanager
def _corrupt_as_client_error() -> Iterator[None]:
    try:
        yield
    except BTreeError as e:
        raise CorruptIndex(str(e)) from e


class SparseIndex(dict[int, int]):
    """A hyper volume's data_vdi_id[] as {idx: vdi_id} for the objects that
    are mapped; any other idx reads 0, as a hole of a flat index does, and
    a slice reads as the list a flat index would give (`nr_objects` long).
    len() counts the mapped objects only."""

    def __init__(self, items: Iterable[tuple[int, int]] = (), nr_objects: int = 0) -> None:
        super().__init__(items)
        self.nr_objects = nr_objects

    def __missing__(self, key: int) -> int:
        return 0

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> list[int]: ...

    def __getitem__(self, key: int | slice) -> int | list[int]:
        if isinstance(key, slice):
            return [self.get(i, 0) for i in range(*key.indices(self.nr_objects))]
        return super().__getitem__(key)


Index = list[int] | SparseIndex


def index_items(index: Index) -> Iterator[tuple[int, int]]:
    """(idx, vdi_id) of every mapped object, in idx order, whatever the
    index's kind: what callers walk instead of enumerate(index)."""
    if isinstance(index, SparseIndex):
        yield from sorted((i, v) for i, v in index.items() if v)
    else:
        yield from ((i, v) for i, v in enumerate(index) if v)


def index_owner(index: Index, idx: int) -> int:
    """The VDI owning object idx (0: a hole), for any idx of the VDI."""
    if isinstance(index, SparseIndex):
        return index[idx]
    return index[idx] if 0 <= idx < len(index) else 0


class HyperTree:
    """One hyper volume's B-tree, read through `client` when made.

    Resource handling: keeps the root and the leaves it has read; changes
    made by another client after that are not seen (as Sheepdog's dog,
    which reads the inode once per command).
    Error handling: SheepdogError/ClientError from the reads and writes;
    CorruptIndex for a corrupt or full tree. One lock serialises its use.
    """

    def __init__(self, client: SheepClient, vid: int) -> None:
        self.client = client
        self.vid = vid
        self.oid = vid_to_vdi_oid(vid)
        self._lock = threading.Lock()
        with _corrupt_as_client_error():
            self.tree = self._load()
        self._stale = False

    def _load(self) -> BTree:
        """The inode's header and the tree's part of its root."""
        head = bytes(self.client.read_obj(self.oid, SD_INODE_HEADER_SIZE + INDEX_HEADER_SIZE))
        self.header = InodeHeader.unpack(head)
        root = bytearray(head[SD_INODE_HEADER_SIZE:])
        meta = meta_size(root)
        if meta > INDEX_HEADER_SIZE:
            root += self.client.read_obj(self.oid, meta - INDEX_HEADER_SIZE,
                                         DATA_VDI_ID_OFFSET + INDEX_HEADER_SIZE)
        return BTree(self.vid, root, self.header.btree_counter, self._read_leaf,
                     self._root_tail)

    def _current(self) -> BTree:
        """The tree, read again after a change failed half way (what is
        on disk then is not what this copy holds)."""
        if self._stale:
            self.tree = self._load()
            self._stale = False
        return self.tree

    def _read_leaf(self, oid: int) -> bytes:
        first = bytes(self.client.read_obj(oid, LEAF_FIRST_READ))
        size = leaf_size(first)
        if size <= len(first):
            return first
        return first + bytes(self.client.read_obj(oid, size - len(first), len(first)))

    def _root_tail(self, start: int, end: int) -> bytes:
        return bytes(self.client.read_obj(self.oid, end - start, DATA_VDI_ID_OFFSET + start))

    def get(self, idx: int) -> int:
        with self._lock, _corrupt_as_client_error():
            return self._current().get(idx)

    def records(self, tolerate: tuple[type[BaseException], ...] = (ClientError,)
                ) -> list[tuple[int, int]]:
        """Every (idx, vdi_id) record, unmapped ones (vdi_id 0) included;
        a leaf that cannot be read is skipped, as C's index walk does."""
        with self._lock, _corrupt_as_client_error():
            return list(self._current().walk(tolerate))

    def sparse_index(self) -> SparseIndex:
        """The mapped objects, as Vdi and dog look them up."""
        return SparseIndex(((i, v) for i, v in self.records() if v), self.header.nr_objects)

    def leaf_oids(self) -> list[int]:
        """The VDI_BTREE objects holding the leaves (none at depth 1)."""
        with self._lock, _corrupt_as_client_error():
            return self._current().leaf_oids()

    def set(self, idx: int, vid: int, flags: int = 0) -> None:
        """sd_inode_set_vid + sd_inode_write_vid: map object idx to `vid`
        (0 unmaps it). Leaves are written without the cache flag, as C
        does; the inode's writes carry `flags` (Flag.CMD_CACHE or 0)."""
        with self._lock, _corrupt_as_client_error():
            tree = self._current()
            try:
                for w in tree.set(idx, vid):
                    if w.create:
                        self.client.create_and_write_obj(w.oid, w.data, w.offset,
                                                         copies=self.header.nr_copies)
                    else:
                        f = flags & Flag.CMD_CACHE if w.oid == self.oid else 0
                        self.client.write_obj(w.oid, w.data, w.offset, flags=f)
            except BaseException:
                self._stale = True
                raise


__all__ = ["HYPER_VOLUME", "CorruptIndex", "HyperTree", "Index", "SparseIndex",
           "index_items", "index_owner"]
