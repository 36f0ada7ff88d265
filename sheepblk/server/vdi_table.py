"""Every node's in-memory view of the VDIs: the in-use and deleted
bitmaps and, per VDI id, copies, block size, snapshot flag and lock.

Why in memory and identical everywhere: it changes only when a cluster
operation's result is applied, in the driver's delivered order, so every
node holds the same table without reading objects; it is rebuilt from the
inode objects at start-up (as Sheepdog's init_vdi_state does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..proto import SD_NR_VDIS, LockState, NodeId, VdiState
from ..proto.constants import LOCK_TYPE_NORMAL, LOCK_TYPE_SHARED

_NOT_FULL = re.compile(rb"[^\xff]")
_ANY_BIT = re.compile(rb"[^\x00]")


class Bitmap:
    """SD_NR_VDIS bits, laid out as Sheepdog's little-endian long array."""

    def __init__(self, nbits: int = SD_NR_VDIS) -> None:
        self.nbits = nbits
        self.bits = bytearray(nbits // 8)

    def test(self, nr: int) -> bool:
        return bool(self.bits[nr >> 3] & (1 << (nr & 7)))

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
        out: list[int] = []
        pos = 0
        while True:
            m = _ANY_BIT.search(self.bits, pos)
            if m is None:
                return out
            i = m.start()
            byte = self.bits[i]
            out.extend(i * 8 + b for b in range(8) if byte & (1 << b))
            pos = i + 1


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

    def state(self) -> VdiState:
        return VdiState(self.vid, self.copies, int(self.snapshot), int(self.deleted),
                        self.copy_policy, self.block_size_shift, self.parent,
                        self.lock_state, NodeId("0.0.0.0", 0))


class VdiTable:
    def __init__(self) -> None:
        self.inuse = Bitmap()
        self.deleted = Bitmap()
        self.entries: dict[int, VdiEntry] = {}

    def reset(self) -> None:
        self.inuse.reset()
        self.deleted.reset()
        self.entries.clear()

    def add(self, entry: VdiEntry) -> None:
        self.inuse.set(entry.vid)
        old = self.entries.get(entry.vid)
        if old is not None:  # keep lock state across a re-add
            entry.lock_state, entry.owner = old.lock_state, old.owner
            entry.participants = old.participants
        self.entries[entry.vid] = entry
        if entry.deleted:
            self.deleted.set(entry.vid)

    def get(self, vid: int) -> VdiEntry | None:
        return self.entries.get(vid)

    def is_snapshot(self, vid: int) -> bool:
        e = self.entries.get(vid)
        return bool(e and e.snapshot)

    def mark_snapshot(self, vid: int) -> None:
        e = self.entries.get(vid)
        if e is not None:
            e.snapshot = True

    def mark_deleted(self, vid: int) -> None:
        self.deleted.set(vid)
        e = self.entries.get(vid)
        if e is not None:
            e.deleted = True
            e.lock_state, e.owner = LockState.UNLOCKED, ""
            e.participants.clear()

    def any_deleted(self) -> bool:
        return any(e.deleted for e in self.entries.values())

    def live(self) -> list[VdiEntry]:
        return [e for e in self.entries.values() if not e.deleted]

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
