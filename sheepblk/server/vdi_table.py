"""Every node's in-memory view of the VDIs: the in-use and deleted
bitmaps and, per VDI id, copies, block size, snapshot flag and lock.

Why in memory and identical everywhere: it changes only when a cluster
operation's result is applied, in the driver's delivered order, so every
node holds the same table without reading objects; it is rebuilt from the
inode objects at start-up (as Sheepdog's init_vdi_state does).

The name index: each entry also carries its inode's name, tag, snap_id and
create_time, and `families` maps a name to the ids of the live VDIs that
carry it (its working VDI and its snapshots). Lookups by name, by (name,
tag) or by (name, snapid) then read no inode (see VdiOps.lookup). These
facts are set where the inode gets them, in the ordered stream: NEW_VDI
(the name, and the tag the snapshotted VDI's inode holds, read by the
op's work half), DEL_VDI (the name is cleared, as in the inode),
NOTIFY_VDI_ADD (read by its work half), the join sync and restart claims
(carried in the rows), and the start-up scan. An entry whose inode could
not be read has `named` False: lookups read that inode instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..proto import SD_NR_VDIS, LockState, NodeId, VdiState, bitmap_ids, bitmap_test
from ..proto.constants import LOCK_TYPE_NORMAL, LOCK_TYPE_SHARED

_NOT_FULL = re.compile(rb"[^\xff]")


class Bitmap:
    """SD_NR_VDIS bits, laid out as Sheepdog's little-endian long array."""

    def __init__(self, nbits: int = SD_NR_VDIS) -> None:
        self.nbits = nbits
        self.bits = bytearray(nbits // 8)

    def test(self, nr: int) -> bool:
        return bitmap_test(self.bits, nr)

    def set(self, nr: int) -> None:
        self.bits[nr >> 3] |= 1 << (nr & 7)

    def clear(self, nr: int) -> None:
        self.bits[nr >> 3] &= ~(1 << (nr & 7)) & 0xFF

    def reset(self) -> None:
        self.bits[:] = bytes(len(self.bits))

    def next_zero(self, start: int) -> int:
        """First clear bit at or after `start`, or nbits."""
        nr = start
        while nr < self.nbits:
            if nr & 7 == 0:
                m = _NOT_FULL.search(self.bits, nr >> 3)
                if m is None:
                    return self.nbits
                nr = m.start() * 8
            if not self.test(nr):
                return nr
            nr += 1
        return self.nbits

    def set_bits(self) -> list[int]:
        return bitmap_ids(self.bits)


@dataclass
class VdiEntry:
    vid: int
    copies: int
    copy_policy: int = 0
    block_size_shift: int = 22
    snapshot: bool = False
    deleted: bool = False
    parent: int = 0
    lock_state: int = LockState.UNLOCKED
    owner: str = ""  # exclusive holder
    participants: set[str] = field(default_factory=set)  # shared holders
    # The inode's naming facts (see the module docstring).
    name: bytes = b""
    tag: bytes = b""
    snap_id: int = 0
    create_time: int = 0
    named: bool = False

    def state(self) -> VdiState:
        return VdiState(self.vid, self.copies, int(self.snapshot), int(self.deleted),
                        self.copy_policy, self.block_size_shift, self.parent,
                        self.lock_state, NodeId("0.0.0.0", 0))


class VdiTable:
    def __init__(self) -> None:
        self.inuse = Bitmap()
        self.deleted = Bitmap()
        self.entries: dict[int, VdiEntry] = {}
        # name -> ids of the live, named entries with that name
        self.families: dict[bytes, set[int]] = {}
        self.unnamed: set[int] = set()  # live entries whose name is unknown

    def reset(self) -> None:
        self.inuse.reset()
        self.deleted.reset()
        self.entries.clear()
        self.families.clear()
        self.unnamed.clear()

    def _unindex(self, e: VdiEntry) -> None:
        self.unnamed.discard(e.vid)
        fam = self.families.get(e.name)
        if fam is not None:
            fam.discard(e.vid)
            if not fam:
                del self.families[e.name]

    def _index(self, e: VdiEntry) -> None:
        if e.deleted:
            return
        if not e.named:
            self.unnamed.add(e.vid)
        elif e.name:
            self.families.setdefault(e.name, set()).add(e.vid)

    def add(self, entry: VdiEntry) -> None:
        self.inuse.set(entry.vid)
        old = self.entries.get(entry.vid)
        if old is not None:  # keep lock state across a re-add
            entry.lock_state, entry.owner = old.lock_state, old.owner
            entry.participants = old.participants
            self._unindex(old)
            if not entry.named and old.named:  # keep what we knew of its inode
                entry.name, entry.tag = old.name, old.tag
                entry.snap_id, entry.create_time, entry.named = \
                    old.snap_id, old.create_time, True
        self.entries[entry.vid] = entry
        if entry.deleted:
            self.deleted.set(entry.vid)
        self._index(entry)

    def set_copies(self, vid: int, copies: int) -> bool:
        """ALTER_VDI_COPY: the VDI's objects have `copies` copies from now
        on. False when the VDI is unknown."""
        e = self.entries.get(vid)
        if e is None:
            return False
        e.copies = copies
        return True

    def set_names(self, vid: int, name: bytes, tag: bytes, snap_id: int,
                  create_time: int, *, parent: int = 0) -> None:
        """Record what `vid`'s inode says (name, tag, snap_id, ctime; its
        parent when the entry had none)."""
        e = self.entries.get(vid)
        if e is None:
            return
        self._unindex(e)
        e.name, e.tag, e.snap_id, e.create_time, e.named = \
            name, tag, snap_id, create_time, True
        e.parent = e.parent or parent
        if e.deleted:
            e.name = b""
        self._index(e)

    def family(self, name: bytes) -> set[int]:
        """Ids of the live VDIs named `name` (working VDI and snapshots)."""
        return self.families.get(name, set())

    def working(self, name: bytes) -> int | None:
        """The working VDI of `name` (the newest when, oddly, several)."""
        vids = [v for v in self.family(name) if not self.entries[v].snapshot]
        return max(vids) if vids else None

    def snapshot_by_tag(self, name: bytes, tag: bytes) -> int | None:
        vids = [v for v in self.family(name)
                if self.entries[v].snapshot and self.entries[v].tag == tag]
        return max(vids) if vids else None

    def snapshot_by_id(self, name: bytes, snap_id: int) -> int | None:
        vids = [v for v in self.family(name)
                if self.entries[v].snapshot and self.entries[v].snap_id == snap_id]
        return max(vids) if vids else None

    def get(self, vid: int) -> VdiEntry | None:
        return self.entries.get(vid)

    def is_snapshot(self, vid: int) -> bool:
        e = self.entries.get(vid)
        return bool(e and e.snapshot)

    def mark_snapshot(self, vid: int, tag: bytes | None = None) -> None:
        """`vid` became a snapshot; `tag`: what its inode's tag field held
        then (None: unknown, keep what we have)."""
        e = self.entries.get(vid)
        if e is not None:
            e.snapshot = True
            if tag is not None:
                e.tag = tag

    def mark_deleted(self, vid: int) -> None:
        self.deleted.set(vid)
        e = self.entries.get(vid)
        if e is not None:
            self._unindex(e)
            e.deleted = True
            e.name = b""  # as DEL_VDI leaves the inode
            e.lock_state, e.owner = LockState.UNLOCKED, ""
            e.participants.clear()

    def forget(self, vid: int) -> None:
        """Drop an entry and both its bits: its id may be given out again
        (VID recycling)."""
        e = self.entries.pop(vid, None)
        if e is not None:
            self._unindex(e)
        self.inuse.clear(vid)
        self.deleted.clear(vid)

    def family_members(self, vid: int) -> list[int]:
        """Every id in `vid`'s family tree: the root its parents lead to
        and all that descend from that root (snapshots and clones)."""
        seen: set[int] = set()
        root = vid
        while True:
            e = self.entries.get(root)
            if e is None or not e.parent or e.parent not in self.entries or root in seen:
                break
            seen.add(root)
            root = e.parent
        children: dict[int, list[int]] = {}
        for e in self.entries.values():
            if e.parent and e.vid != root:
                children.setdefault(e.parent, []).append(e.vid)
        out, todo = [], [root]
        while todo:
            v = todo.pop()
            if v in out:
                continue
            out.append(v)
            todo.extend(children.get(v, []))
        return out

    def any_deleted(self) -> bool:
        return any(e.deleted for e in self.entries.values())

    def live(self) -> list[VdiEntry]:
        return [e for e in self.entries.values() if not e.deleted]

    def may_name(self, roots: Iterable[int]) -> list[VdiEntry]:
        """The live VDIs whose data_vdi_id[] may name an object of one of
        `roots`: the roots, every VDI made from one (by parent, clones and
        the working VDIs after snapshots, recursively) and every unnamed
        VDI (registered without reading its inode, so its parent may be
        unknown). Why this is all: a new VDI's index is a copy of its
        base's, and clients (QEMU, dog, ours) only ever write their own id
        or 0 into an index."""
        children: dict[int, list[int]] = {}
        for e in self.entries.values():
            if e.parent and e.parent != e.vid:
                children.setdefault(e.parent, []).append(e.vid)
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            v = todo.pop()
            if v not in seen:
                seen.add(v)
                todo.extend(children.get(v, ()))
        seen |= self.unnamed
        return [x for v in seen if (x := self.entries.get(v)) is not None and not x.deleted]

    # ---- locks (owner is an opaque client key: node address + connection) ----

    def lock(self, vid: int, owner: str, kind: int) -> bool:
        e = self.entries.get(vid)
        if e is None or e.deleted:
            return False
        if kind == LOCK_TYPE_NORMAL:
            if e.lock_state == LockState.UNLOCKED:
                e.lock_state, e.owner = LockState.LOCKED, owner
                return True
            return False
        if kind == LOCK_TYPE_SHARED:
            if e.lock_state in (LockState.UNLOCKED, LockState.SHARED):
                e.lock_state = LockState.SHARED
                e.participants.add(owner)
                return True
        return False

    def move_lock(self, old_vid: int, new_vid: int) -> None:
        """A snapshot of a locked VDI: the writer goes on writing the new
        working VDI (QEMU releases that one at close), so the lock moves
        there and the read-only snapshot is free to open at once."""
        old, new = self.entries.get(old_vid), self.entries.get(new_vid)
        if old is None or new is None or old.lock_state == LockState.UNLOCKED:
            return
        new.lock_state, new.owner, new.participants = old.lock_state, old.owner, old.participants
        old.lock_state, old.owner, old.participants = LockState.UNLOCKED, "", set()

    def unlock(self, vid: int, owner: str, kind: int) -> None:
        e = self.entries.get(vid)
        if e is None:
            return
        if kind == LOCK_TYPE_NORMAL and e.lock_state == LockState.LOCKED:
            e.lock_state, e.owner = LockState.UNLOCKED, ""
        elif kind == LOCK_TYPE_SHARED and e.lock_state == LockState.SHARED:
            e.participants.discard(owner)
            if not e.participants:
                e.lock_state = LockState.UNLOCKED

    def release_owner(self, prefix: str, vid: int | None = None) -> list[int]:
        """Drop the locks of one client (`prefix` is its exact owner key),
        or of every client of a node that left (`prefix` ends with "/");
        only those on `vid` when given."""

        def owned(owner: str) -> bool:
            return owner == prefix or (prefix.endswith("/") and owner.startswith(prefix))

        freed = []
        for e in self.entries.values():
            if vid is not None and e.vid != vid:
                continue
            if e.lock_state == LockState.LOCKED and owned(e.owner):
                e.lock_state, e.owner = LockState.UNLOCKED, ""
                freed.append(e.vid)
            elif e.lock_state == LockState.SHARED:
                gone = {p for p in e.participants if owned(p)}
                if gone:
                    e.participants -= gone
                    freed.append(e.vid)
                    if not e.participants:
                        e.lock_state = LockState.UNLOCKED
        return freed

    def is_locked(self, vid: int) -> bool:
        e = self.entries.get(vid)
        return bool(e and e.lock_state != LockState.UNLOCKED)
