"""Hyper volumes' object index: the B-tree in data_vdi_id[] (store_policy 1).

A VDI made with `dog vdi create -y` may span 2^32 objects (16 PiB), more
than the flat data_vdi_id[2^20] can name, so Sheepdog 1.0 (lib/sd_inode.c)
keeps its index as a two-level B-tree of sorted (idx, vdi_id) pairs
instead. Its bytes are Sheepdog's, because C dog, sheepfs and the daemons
read and write the same objects:

- a node is a header (u16 magic 0x6274, u16 depth, u32 entries) then
  `entries` sorted records; nodes are SD_INODE_DATA_INDEX_SIZE (4 MiB);
- the root is the inode's data_vdi_id[] area. Depth 1: the root holds
  leaf records `sd_index` {u32 idx, u32 vdi_id} (8 bytes). Depth 2: it
  holds `sd_indirect_idx` {u32 idx, u64 oid}, 16 bytes as C lays it out
  on x86-64 (4 bytes of alignment padding after idx), whose idx is the
  largest idx of the leaf stored in the VDI_BTREE object `oid`;
- leaves are VDI_BTREE objects, vid_to_btree_oid(vid, btree_counter++),
  the counter kept in the inode header.

Sheepdog's comment claims 349524 indirect records fit a root; that counts
12-byte records. The compiled structure is 16 bytes, so 262143 fit.

Nothing here does I/O (proto/ imports nothing of the project): `BTree`
reads leaves through a callback and returns the writes a change needs
(leaves, the inode's btree_counter and root), in an order that keeps the
tree readable if it stops half way; the caller performs them in order.

Nodes are changed in place, as C does with its buffers, so the bytes on
disk come out the same, including what C leaves in padding and past the
last record. Only the bytes that changed are written, where C rewrites
whole 4 MiB leaves and the inode's header and whole root on every change
(sd_inode_write; `inode_meta` gives those bytes): what the writes leave
on disk is what C's would.

One deliberate difference: C's split of a full leaf in the middle of the
tree (split_index_node) keys the new left half by the record one past its
end (zero in a zeroed buffer), which files it first in the root and makes
its records unreachable to lookups. We key it by its last record, as C's
root split does; trees with no such split (those grown by appending, the
usual case) are the same bytes either way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .inode import _HEADER as _INODE_HEADER
from .inode import DATA_VDI_ID_OFFSET, SD_INODE_DATA_INDEX_SIZE, SD_INODE_HEADER_SIZE
from .oid import vid_to_btree_oid, vid_to_vdi_oid

INODE_BTREE_MAGIC = 0x6274
NODE_SIZE = SD_INODE_DATA_INDEX_SIZE
INDEX_HEADER = struct.Struct("<HHI")  # magic, depth, entries
INDEX_HEADER_SIZE = INDEX_HEADER.size
SD_INDEX = struct.Struct("<II")  # idx, vdi_id
SD_INDEX_SIZE = SD_INDEX.size
SD_INDIRECT_IDX_SIZE = 16  # u32 idx, 4 bytes padding, u64 oid
INDIRECT_OID_OFFSET = 8  # of the oid within an sd_indirect_idx
PAYLOAD_SIZE = NODE_SIZE - INDEX_HEADER_SIZE
MAX_INDEX = PAYLOAD_SIZE // SD_INDEX_SIZE  # records in a leaf
MAX_INDIRECT_IDX = PAYLOAD_SIZE // SD_INDIRECT_IDX_SIZE  # records in a depth-2 root
# struct sd_inode's btree_counter: the last field before the unused words.
BTREE_COUNTER_OFFSET = _INODE_HEADER.size - 4

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

assert INDEX_HEADER_SIZE == 8 and MAX_INDEX == 524287 and MAX_INDIRECT_IDX == 262143
assert BTREE_COUNTER_OFFSET == 568

Buf = bytes | bytearray | memoryview
ReadNode = Callable[[int], Buf]
RootTail = Callable[[int, int], Buf]


class BTreeError(Exception):
    """A B-tree that cannot be read or grown: bad magic or depth, or full."""


class NodeHeader(NamedTuple):
    magic: int
    depth: int
    entries: int


class NodeWrite(NamedTuple):
    """A write the caller performs: `data` at `offset` of object `oid`,
    created (CREATE_AND_WRITE) when `create`."""

    oid: int
    offset: int
    data: bytes
    create: bool


# ---- node layout ----

def parse_header(node: Buf) -> NodeHeader:
    """The sd_index_header at the start of a node (or of data_vdi_id[])."""
    return NodeHeader(*INDEX_HEADER.unpack_from(node, 0))


def _entries(node: Buf) -> int:
    return _U32.unpack_from(node, 4)[0]


def _depth(node: Buf) -> int:
    return _U16.unpack_from(node, 2)[0]


def init_node(depth: int = 1) -> bytearray:
    """A fresh node's header, as sd_inode_init writes it (no records)."""
    return bytearray(INDEX_HEADER.pack(INODE_BTREE_MAGIC, depth, 0))


def _set_header(node: bytearray, depth: int, entries: int) -> None:
    struct.pack_into("<HI", node, 2, depth, entries)


def record_size(depth: int) -> int:
    """Bytes per record in a node of this depth (1: leaf, 2: root)."""
    return SD_INDIRECT_IDX_SIZE if depth == 2 else SD_INDEX_SIZE


def meta_size(root: Buf) -> int:
    """sd_inode_get_meta_size: the bytes of data_vdi_id[] the tree uses.
    A root never initialised (all zero, depth 0) is its header alone."""
    h = parse_header(root)
    if h.depth == 0:
        return INDEX_HEADER_SIZE
    if h.depth > 2:
        raise BTreeError(f"B-tree depth {h.depth} out of range")
    return INDEX_HEADER_SIZE + record_size(h.depth) * h.entries


def leaf_size(node: Buf) -> int:
    """A leaf's header plus records: what a leaf write must cover. Leaves
    hold sd_index records whatever their depth field says, as in C."""
    return INDEX_HEADER_SIZE + SD_INDEX_SIZE * _entries(node)


def leaf_record(node: Buf, i: int) -> tuple[int, int]:
    """(idx, vdi_id) of record i of a leaf."""
    idx, vid = SD_INDEX.unpack_from(node, INDEX_HEADER_SIZE + SD_INDEX_SIZE * i)
    return idx, vid


def leaf_records(node: Buf) -> list[tuple[int, int]]:
    """Every (idx, vdi_id) of a leaf, in idx order."""
    n = _entries(node)
    end = INDEX_HEADER_SIZE + SD_INDEX_SIZE * n
    return list(SD_INDEX.iter_unpack(bytes(node[INDEX_HEADER_SIZE:end])))


def indirect_record(node: Buf, i: int) -> tuple[int, int]:
    """(largest idx, leaf oid) of record i of a depth-2 root."""
    off = INDEX_HEADER_SIZE + SD_INDIRECT_IDX_SIZE * i
    return _U32.unpack_from(node, off)[0], _U64.unpack_from(node, off + INDIRECT_OID_OFFSET)[0]


def indirect_records(node: Buf) -> list[tuple[int, int]]:
    return [indirect_record(node, i) for i in range(_entries(node))]


def search(node: Buf, idx: int, size: int = SD_INDEX_SIZE) -> int:
    """Sheepdog's nbsearch over a node's records of `size` bytes by idx:
    the position of the record with this idx, else where one would be
    inserted. An idx past the last record (sequential writes) is found
    without the binary search: same answer."""
    key = _U32.unpack_from
    n = key(node, 4)[0]
    if n and idx > key(node, INDEX_HEADER_SIZE + size * (n - 1))[0]:
        return n
    lo, hi = 0, n - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        k = key(node, INDEX_HEADER_SIZE + size * mid)[0]
        if idx < k:
            hi = mid - 1
        elif idx > k:
            lo = mid + 1
        else:
            return mid
    return lo


def _insert(node: bytearray, pos: int, size: int,
            record: Callable[[bytearray, int], None]) -> tuple[int, int]:
    """Open a slot of `size` bytes at record `pos` (moving the rest up,
    padding and all) and fill it; the node must already be long enough.
    Returns the record bytes changed (the header changes too)."""
    h = parse_header(node)
    start = INDEX_HEADER_SIZE + size * pos
    end = INDEX_HEADER_SIZE + size * h.entries
    node[start + size:end + size] = node[start:end]
    record(node, start)
    _set_header(node, h.depth, h.entries + 1)
    return start, end + size


def _grow(node: bytearray, length: int, tail: RootTail | None = None) -> None:
    need = length - len(node)
    if need > 0:
        extra = bytes(tail(len(node), length))[:need] if tail else b""
        node.extend(extra.ljust(need, b"\0"))


def _leaf_insert(node: bytearray, pos: int, idx: int, vid: int) -> tuple[int, int]:
    """insert_index_nosearch: a leaf record at `pos` (the root at depth 1
    is a leaf too)."""
    _grow(node, leaf_size(node) + SD_INDEX_SIZE)
    return _insert(node, pos, SD_INDEX_SIZE,
                   lambda b, off: SD_INDEX.pack_into(b, off, idx, vid))


def _split(src: bytearray, num: int) -> bytearray:
    """split_to_nodes: a new node with the first `num` records; `src` is
    changed in place to hold the rest at its front (bytes past them stay)."""
    h = parse_header(src)
    left = bytearray(src[:INDEX_HEADER_SIZE + SD_INDEX_SIZE * num])
    _set_header(left, h.depth, num)
    a, b = INDEX_HEADER_SIZE + SD_INDEX_SIZE * num, INDEX_HEADER_SIZE + SD_INDEX_SIZE * h.entries
    src[INDEX_HEADER_SIZE:INDEX_HEADER_SIZE + b - a] = src[a:b]
    _set_header(src, h.depth, h.entries - num)
    return left


def inode_meta(header: Buf, root: Buf, counter: int) -> bytes:
    """What sd_inode_write writes for a hyper volume at offset 0 of its
    inode: the header (btree_counter set) and the tree's part of the root."""
    if len(header) < SD_INODE_HEADER_SIZE:
        raise ValueError(f"an inode header is {SD_INODE_HEADER_SIZE} bytes, not {len(header)}")
    head = bytearray(header[:SD_INODE_HEADER_SIZE])
    _U32.pack_into(head, BTREE_COUNTER_OFFSET, counter)
    return bytes(head) + bytes(root[:meta_size(root)])


class _Path(NamedTuple):
    found: bool
    pos: int  # of the record in `node` (found) or where it would go
    node: bytearray | None  # the root (depth 1) or a leaf; None: last leaf full
    oid: int  # of that leaf; ROOT for the root
    ipos: int  # depth 2: position in the root searched


ROOT = 0  # the key of the root among the nodes a change touched


class _Dirty:
    """What one change did to one node: created it, or changed its
    header and/or the record bytes rec_lo..rec_hi."""

    def __init__(self, old_size: int, created: bool = False) -> None:
        self.old_size = old_size
        self.created = created
        self.header = False
        self.rec_lo = self.rec_hi = 0

    def records(self, lo: int, hi: int) -> None:
        if self.rec_lo == self.rec_hi:
            self.rec_lo, self.rec_hi = lo, hi
        else:
            self.rec_lo, self.rec_hi = min(self.rec_lo, lo), max(self.rec_hi, hi)


class BTree:
    """One hyper volume's index, as sd_inode_get_vid / sd_inode_set_vid /
    sd_inode_index_walk see it.

    `root` is data_vdi_id[] from its start, at least meta_size(root)
    bytes (it is changed in place and grown as needed: by `root_tail(a, b)`,
    the inode's bytes a..b of data_vdi_id[] on disk, where C would expose
    them in padding, else by zeros). `read_node(oid)` returns a leaf's
    header and records at least. Leaves read or written are cached here,
    so one BTree must not outlive other writers of the same VDI.

    Error handling: BTreeError for a corrupt or full tree; whatever
    `read_node` raises propagates (except in walk, see there).
    """

    def __init__(self, vdi_id: int, root: bytearray, counter: int, read_node: ReadNode,
                 root_tail: RootTail | None = None) -> None:
        self.vdi_id = vdi_id
        self.root = root
        self.counter = counter
        self._read = read_node
        self._tail = root_tail
        self.nodes: dict[int, bytearray] = {}
        self._dirty: dict[int, _Dirty] = {}

    # ---- reading ----

    @property
    def initialized(self) -> bool:
        """C's test: data_vdi_id[0] == 0 means no tree yet (all zero)."""
        return bytes(self.root[:4]) != bytes(4)

    @property
    def depth(self) -> int:
        return _depth(self.root) if self.initialized else 0

    def node(self, oid: int) -> bytearray:
        """A leaf, read once and then kept."""
        got = self.nodes.get(oid)
        if got is None:
            raw = self._read(oid)
            got = self.nodes[oid] = bytearray(memoryview(raw)[:leaf_size(raw)])
        return got

    def leaf_oids(self) -> list[int]:
        """The VDI_BTREE objects the root points at (none at depth 1)."""
        return [oid for _, oid in indirect_records(self.root)] if self.depth == 2 else []

    def _search(self, idx: int) -> _Path:
        """search_whole_btree: where idx is, or where it would go."""
        root = self.root
        h = parse_header(root)
        if h.depth == 1:
            pos = search(root, idx)
            found = pos < h.entries and leaf_record(root, pos)[0] == idx
            return _Path(found, pos, root, ROOT, 0)
        if h.depth != 2:
            raise BTreeError(f"B-tree depth {h.depth} out of range")
        ipos = search(root, idx, SD_INDIRECT_IDX_SIZE)
        if ipos < h.entries:
            oid = indirect_record(root, ipos)[1]
            leaf = self.node(oid)
            pos = search(leaf, idx)
            found = pos < _entries(leaf) and leaf_record(leaf, pos)[0] == idx
            return _Path(found, pos, leaf, oid, ipos)
        # Past every leaf's largest idx: the last leaf takes it if it can.
        oid = indirect_record(root, ipos - 1)[1]
        leaf = self.node(oid)
        if _entries(leaf) < MAX_INDEX:
            return _Path(False, search(leaf, idx), leaf, oid, ipos)
        return _Path(False, 0, None, ROOT, ipos)

    def leaf_for(self, idx: int) -> int:
        """The leaf get(idx) reads (0: none, the root answers), so that a
        caller with asynchronous I/O can fetch it into `nodes` first."""
        if not self.initialized or _depth(self.root) != 2:
            return 0
        ipos = search(self.root, idx, SD_INDIRECT_IDX_SIZE)
        return indirect_record(self.root, ipos)[1] if ipos < _entries(self.root) else 0

    def get(self, idx: int) -> int:
        """sd_inode_get_vid: the VDI owning object idx, 0 if none."""
        if not self.initialized:
            return 0
        h = parse_header(self.root)
        if h.depth == 1:
            node = self.root
        elif h.depth == 2:
            ipos = search(self.root, idx, SD_INDIRECT_IDX_SIZE)
            if ipos >= h.entries:
                return 0  # past the last leaf's largest idx
            node = self.node(indirect_record(self.root, ipos)[1])
        else:
            return 0
        pos = search(node, idx)
        if pos < _entries(node):
            got, vid = leaf_record(node, pos)
            return vid if got == idx else 0
        return 0

    def walk(self, tolerate: tuple[type[BaseException], ...] = ()) -> Iterator[tuple[int, int]]:
        """sd_inode_index_walk: every (idx, vdi_id) record in idx order,
        zero vdi_ids included. A leaf whose read raises one of `tolerate`
        is skipped, as C logs and goes on."""
        if not self.initialized:
            return
        h = parse_header(self.root)
        if h.depth == 1:
            yield from leaf_records(self.root)
            return
        if h.depth != 2:
            raise BTreeError(f"B-tree depth {h.depth} out of range")
        for _, oid in indirect_records(self.root):
            try:
                leaf = self.node(oid)
            except tolerate:
                continue
            yield from leaf_records(leaf)

    # ---- changing ----

    def _touch(self, key: int) -> _Dirty:
        d = self._dirty.get(key)
        if d is None:
            node = self.root if key == ROOT else self.nodes[key]
            size = meta_size(node) if key == ROOT else leaf_size(node)
            d = self._dirty[key] = _Dirty(size)
        return d

    def _inserted(self, key: int, span: tuple[int, int]) -> None:
        """Note an insert into a node already touched (before it changed)."""
        d = self._dirty[key]
        d.header = True
        d.records(*span)

    def _new_leaf(self, node: bytearray) -> int:
        """File a new leaf under the next btree oid (created when written)."""
        oid = vid_to_btree_oid(self.vdi_id, self.counter)
        self.counter += 1
        self.nodes[oid] = node
        self._dirty[oid] = _Dirty(0, created=True)
        return oid

    def _root_insert(self, pos: int, idx: int, oid: int) -> None:
        """insert_indirect_nosearch: a record at `pos` of a depth-2 root;
        its padding keeps whatever bytes the slot held."""
        root = self.root
        self._touch(ROOT)
        _grow(root, meta_size(root) + SD_INDIRECT_IDX_SIZE, self._tail)

        def fill(b: bytearray, off: int) -> None:
            _U32.pack_into(b, off, idx)
            _U64.pack_into(b, off + INDIRECT_OID_OFFSET, oid)

        self._inserted(ROOT, _insert(root, pos, SD_INDIRECT_IDX_SIZE, fill))

    def _file(self, leaf: bytearray, oid: int) -> None:
        """insert_idx_entry: a root record for `leaf`, keyed by its last idx."""
        key = leaf_record(leaf, _entries(leaf) - 1)[0]
        self._root_insert(search(self.root, key, SD_INDIRECT_IDX_SIZE), key, oid)

    def _to_depth2(self) -> None:
        """transfer_to_idx_root: the full root's records go to two new
        leaves, and the root points at them."""
        root = self.root
        right = bytearray(root[:leaf_size(root)])
        left = _split(right, _entries(root) // 2)
        left_oid, right_oid = self._new_leaf(left), self._new_leaf(right)
        self._touch(ROOT).header = True
        _set_header(root, 2, 0)
        self._file(left, left_oid)
        self._file(right, right_oid)

    def _split_leaf(self, p: _Path) -> None:
        """split_index_node: the first half of a full leaf moves to a new
        leaf, filed in the root just before the old one (see the module
        docstring for how C files it)."""
        if _entries(self.root) >= MAX_INDIRECT_IDX:
            raise BTreeError("B-tree is full")
        assert p.node is not None
        d = self._touch(p.oid)
        left = _split(p.node, _entries(p.node) // 2)
        d.header = True
        d.records(INDEX_HEADER_SIZE, leaf_size(p.node))
        self._file(left, self._new_leaf(left))

    def set(self, idx: int, vid: int) -> list[NodeWrite]:
        """sd_inode_set_vid: point object idx at `vid` (0 unmaps it but
        keeps its record, as C does) and return the writes that make it
        so on disk, in a safe order (see `_writes`)."""
        root = self.root
        self._dirty = {}
        counter = self.counter
        if not self.initialized:
            root[:INDEX_HEADER_SIZE] = init_node(1)
            self._touch(ROOT).header = True
        if parse_header(root).magic != INODE_BTREE_MAGIC:
            raise BTreeError("B-tree in inode is corrupt")
        while True:
            p = self._search(idx)
            h = parse_header(root)
            if p.found:
                assert p.node is not None
                off = INDEX_HEADER_SIZE + SD_INDEX_SIZE * p.pos + 4
                _U32.pack_into(p.node, off, vid)
                self._touch(p.oid).records(off, off + 4)
            elif h.depth == 1:
                if h.entries >= MAX_INDEX:
                    self._to_depth2()
                    continue
                self._touch(ROOT)
                self._inserted(ROOT, _leaf_insert(root, p.pos, idx, vid))
            elif p.ipos < h.entries:
                assert p.node is not None
                if _entries(p.node) >= MAX_INDEX:
                    self._split_leaf(p)
                    continue
                self._touch(p.oid)
                self._inserted(p.oid, _leaf_insert(p.node, p.pos, idx, vid))
            elif p.node is not None:  # the last leaf has room
                self._touch(p.oid)
                self._inserted(p.oid, _leaf_insert(p.node, p.pos, idx, vid))
                off = INDEX_HEADER_SIZE + SD_INDIRECT_IDX_SIZE * (p.ipos - 1)
                _U32.pack_into(root, off, leaf_record(p.node, _entries(p.node) - 1)[0])
                self._touch(ROOT).records(off, off + 4)
            else:  # the last leaf is full: a new one after it
                if h.entries >= MAX_INDIRECT_IDX:
                    raise BTreeError("B-tree is full")
                leaf = init_node(1)
                _leaf_insert(leaf, 0, idx, vid)
                self._root_insert(p.ipos, idx, self._new_leaf(leaf))
            break
        return self._writes(counter)

    def _node_writes(self, oid: int, base: int, node: bytearray, d: _Dirty,
                     create: bool = False) -> list[NodeWrite]:
        """One write when it can be atomic and small; an append is its
        records, then the header that makes them count."""
        if d.created:
            return [NodeWrite(oid, base, bytes(node[:leaf_size(node)]), True)]
        if not d.header:
            return [NodeWrite(oid, base + d.rec_lo, bytes(node[d.rec_lo:d.rec_hi]), create)]
        if d.rec_lo == d.rec_hi:
            return [NodeWrite(oid, base, bytes(node[:INDEX_HEADER_SIZE]), create)]
        if d.rec_lo >= d.old_size:
            return [NodeWrite(oid, base + d.rec_lo, bytes(node[d.rec_lo:d.rec_hi]), create),
                    NodeWrite(oid, base, bytes(node[:INDEX_HEADER_SIZE]), create)]
        return [NodeWrite(oid, base, bytes(node[:d.rec_hi]), create)]

    def _writes(self, counter: int) -> list[NodeWrite]:
        """New leaves, then the inode's btree_counter (before anything
        points past it), then the root, then the leaves changed in place:
        a crash between any two leaves every record reachable, and a leaf
        half moved by a split reachable through both halves."""
        inode = vid_to_vdi_oid(self.vdi_id)
        out: list[NodeWrite] = []
        for oid, d in self._dirty.items():
            if d.created:
                out += self._node_writes(oid, 0, self.nodes[oid], d)
        if self.counter != counter:
            out.append(NodeWrite(inode, BTREE_COUNTER_OFFSET, _U32.pack(self.counter), False))
        root = self._dirty.get(ROOT)
        if root is not None:
            out += self._node_writes(inode, DATA_VDI_ID_OFFSET, self.root, root)
        for oid, d in self._dirty.items():
            if oid != ROOT and not d.created:
                out += self._node_writes(oid, 0, self.nodes[oid], d)
        self._dirty = {}
        return out


def stat(records: Iterator[tuple[int, int]] | list[tuple[int, int]], vdi_id: int
         ) -> tuple[int, int]:
    """sd_inode_stat over B-tree records: (objects the VDI owns, objects
    it shares with another VDI)."""
    mine = cow = 0
    for _, vid in records:
        if vid == vdi_id:
            mine += 1
        elif vid:
            cow += 1
    return mine, cow
