"""What may be on a VDI after a power cut, and a seeded workload that
keeps that model while it drives a node through our client.

The rules (README, "Durability"): a write is durable once a flush after it
completed, or at once when it was a FUA write; cluster operations (create,
snapshot, clone, delete) are durable when they answer. After a cut each
512-byte sector holds its durable bytes or the bytes of one of the writes
made to it since, never anything else, and every sector can be read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sheepblk.client import SheepClient, SheepdogError, Vdi
from sheepblk.proto import Res, vid_to_vdi_oid
from sheepblk.proto.constants import SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN

SECTOR = 512
MiB = 1 << 20
OBJ = 4 * MiB
VDI_SIZE = 8 * MiB
_BLOCK = 64 * 1024  # compared whole first; sector by sector only when it differs


@dataclass
class VdiModel:
    """One writable VDI: its durable bytes, and the writes since."""

    name: str
    durable: bytearray
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    current: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.current = bytearray(self.durable)

    def write(self, off: int, data: bytes, *, fua: bool) -> None:
        self.current[off:off + len(data)] = data
        if fua:
            # Durable now; earlier unflushed writes to these sectors can no
            # longer show (the FUA bytes are on disk over them).
            self.durable[off:off + len(data)] = data
            self.pending = [piece for p in self.pending
                            for piece in _minus(p, off, len(data)) if piece[1]]
        else:
            self.pending.append((off, data))

    def flushed(self) -> None:
        self.durable = bytearray(self.current)
        self.pending = []

    def check(self, got: bytes | bytearray) -> list[int]:
        """Sectors of `got` that hold neither the durable bytes nor those
        left by some of the writes made since, applied in their order (a
        power cut keeps any subset of them: empty when all is allowed)."""
        bad = []
        view = memoryview(got)
        durable = memoryview(self.durable)
        current = memoryview(self.current)  # every write since kept
        for block in range(0, len(self.durable), _BLOCK):  # equal blocks at C speed
            if view[block:block + _BLOCK] in (durable[block:block + _BLOCK],
                                              current[block:block + _BLOCK]):
                continue
            for lo in range(block, min(block + _BLOCK, len(self.durable)), SECTOR):
                sector = bytes(view[lo:lo + SECTOR])
                if sector == durable[lo:lo + SECTOR]:
                    continue
                writes = [(o, d) for o, d in self.pending if o < lo + SECTOR and lo < o + len(d)]
                if not _reachable(sector, bytes(durable[lo:lo + SECTOR]), lo, writes):
                    bad.append(lo // SECTOR)
        return bad

    def survived(self, got: bytes | bytearray) -> None:
        """After a cut: what is there is the durable state from now on."""
        self.durable = bytearray(got)
        self.current = bytearray(got)
        self.pending = []


def _reachable(sector: bytes, base: bytes, lo: int, writes: list[tuple[int, bytes]]) -> bool:
    """Whether `sector` is `base` with some subset of `writes` applied in
    order; past 10 writes, whether each byte is base's or some write's."""
    def apply(cur: bytearray, off: int, data: bytes) -> None:
        a, b = max(lo, off), min(lo + len(cur), off + len(data))
        cur[a - lo:b - lo] = data[a - off:b - off]

    if len(writes) > 10:
        options = [{base[i]} for i in range(len(base))]
        for off, data in writes:
            one = bytearray(base)
            apply(one, off, data)
            for i in range(len(base)):
                options[i].add(one[i])
        return all(sector[i] in options[i] for i in range(len(base)))
    for mask in range(1, 1 << len(writes)):
        cur = bytearray(base)
        for i, (off, data) in enumerate(writes):
            if mask >> i & 1:
                apply(cur, off, data)
        if cur == sector:
            return True
    return False


def _minus(p: tuple[int, bytes], off: int, n: int) -> list[tuple[int, bytes]]:
    """The parts of a pending write outside the range a FUA write covered."""
    po, pd = p
    end = po + len(pd)
    if end <= off or off + n <= po:
        return [p]
    out = []
    if po < off:
        out.append((po, pd[:off - po]))
    if end > off + n:
        out.append((off + n, pd[off + n - po:]))
    return out


# Snapshots kept at most; a snapshot beyond deletes the oldest instead, so
# long runs do not read an ever larger cluster at each check.
MAX_SNAPSHOTS = 6


@dataclass
class ClusterModel:
    vdis: dict[str, VdiModel] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    deleted_snapshots: set[tuple[str, str]] = field(default_factory=set)
    counter: int = 0
    # What changed since the last check: only these can have lost
    # anything in a cut (a periodic full check covers the rest).
    touched: set[str] = field(default_factory=set)
    new_snapshots: set[tuple[str, str]] = field(default_factory=set)


class Workload:
    """Seeded random operations through our client, recorded in the model.
    Error handling: any client error is a test failure (the node is up)."""

    def __init__(self, rnd: random.Random, model: ClusterModel) -> None:
        self.rnd = rnd
        self.m = model

    def _open(self, c: SheepClient, name: str) -> Vdi:
        return Vdi(c, name, cache=True)

    def step(self, c: SheepClient) -> str:
        r = self.rnd.random()
        live = sorted(self.m.vdis)
        if not live or (r < 0.03 and len(live) < 4):
            return self._create(c)
        name = self.rnd.choice(live)
        self.m.touched.add(name)
        if r < 0.55:
            return self._write(c, name, fua=False)
        if r < 0.65:
            return self._write(c, name, fua=True)
        if r < 0.78:
            with self._open(c, name) as v:
                v.flush()
            self.m.vdis[name].flushed()
            return f"flush {name}"
        if r < 0.85:
            return self._discard(c, name)
        if r < 0.91:
            return self._snapshot(c, name)
        if r < 0.96:
            return self._clone(c)
        return self._delete(c, name)

    def _create(self, c: SheepClient) -> str:
        self.m.counter += 1
        name = f"v{self.m.counter}"
        c.create_vdi(name, VDI_SIZE)
        self.m.vdis[name] = VdiModel(name, bytearray(VDI_SIZE))
        self.m.touched.add(name)
        return f"create {name}"

    def _write(self, c: SheepClient, name: str, *, fua: bool) -> str:
        rnd = self.rnd
        n = rnd.choice([SECTOR, 4096, 4096, 65536, 300_000, OBJ + 8192])
        off = rnd.randrange(0, (VDI_SIZE - n) // SECTOR) * SECTOR
        if rnd.random() < 0.3:
            off = rnd.randrange(0, VDI_SIZE - n)  # unaligned
        data = rnd.randbytes(n)
        with self._open(c, name) as v:
            v.pwrite(data, off, fua=fua)
        self.m.vdis[name].write(off, data, fua=fua)
        return f"{'fua ' if fua else ''}write {name} {off}+{n}"

    def _discard(self, c: SheepClient, name: str) -> str:
        idx = self.rnd.randrange(VDI_SIZE // OBJ)
        with self._open(c, name) as v:
            v.zero(OBJ, idx * OBJ)
        self.m.vdis[name].write(idx * OBJ, bytes(OBJ), fua=False)
        return f"discard {name} object {idx}"

    def _snapshot(self, c: SheepClient, name: str) -> str:
        """As QEMU and dog: flush, write the tag into the working inode,
        then NEW_VDI with the snapshot flag."""
        if len(self.m.snapshots) >= MAX_SNAPSHOTS:
            return self._delete_snapshot(c)
        self.m.counter += 1
        tag = f"s{self.m.counter}"
        with self._open(c, name) as v:
            v.flush()
            vid = v.vid
        self.m.vdis[name].flushed()
        c.write_obj(vid_to_vdi_oid(vid), tag.encode().ljust(SD_MAX_VDI_TAG_LEN, b"\0"),
                    SD_MAX_VDI_LEN)
        c.create_vdi(name, VDI_SIZE, base_vid=vid, snapshot=True)
        self.m.snapshots[(name, tag)] = bytes(self.m.vdis[name].durable)
        self.m.new_snapshots.add((name, tag))
        return f"snapshot {name}@{tag}"

    def _delete_snapshot(self, c: SheepClient) -> str:
        """The oldest snapshot goes (`dog vdi delete -s`); its clones and
        its VDI keep every byte they share with it."""
        name, tag = min(self.m.snapshots, key=lambda k: int(k[1][1:]))
        c.delete_vdi(name, tag=tag)
        del self.m.snapshots[(name, tag)]
        self.m.new_snapshots.discard((name, tag))
        self.m.deleted_snapshots.add((name, tag))
        return f"delete snapshot {name}@{tag}"

    def _clone(self, c: SheepClient) -> str:
        if not self.m.snapshots:
            return self._create(c)
        (base, tag) = self.rnd.choice(sorted(self.m.snapshots))
        self.m.counter += 1
        name = f"c{self.m.counter}"
        with Vdi(c, base, tag=tag, writable=False) as snap:
            c.create_vdi(name, VDI_SIZE, base_vid=snap.vid)
        self.m.vdis[name] = VdiModel(name, bytearray(self.m.snapshots[(base, tag)]))
        self.m.touched.add(name)
        return f"clone {base}@{tag} -> {name}"

    def _delete(self, c: SheepClient, name: str) -> str:
        if any(b == name for b, _ in self.m.snapshots):
            return f"keep {name} (it has snapshots)"
        c.delete_vdi(name)
        del self.m.vdis[name]
        self.m.deleted.add(name)
        return f"delete {name}"


@dataclass
class Scope:
    """What one check reads back."""

    vdis: list[str]
    snapshots: list[tuple[str, str]]


def scope(m: ClusterModel, *, full: bool) -> Scope:
    """The VDIs and snapshots the next check reads: all of them, or (not
    `full`) only those that changed since the last one; the rest were
    checked then and nothing has written to them since. Starts the next
    round of changes."""
    names = sorted(m.vdis) if full else sorted(m.touched & set(m.vdis))
    snaps = sorted(m.snapshots) if full else sorted(m.new_snapshots & set(m.snapshots))
    m.touched.clear()
    m.new_snapshots.clear()
    return Scope(names, snaps)


def verify(c: SheepClient, m: ClusterModel, what: Scope | None = None) -> list[str]:
    """What the model allows, read back (everything, or `what`); returns
    what is wrong. Deleted VDIs and snapshots are always looked up."""
    wrong = []
    if what is None:
        what = Scope(sorted(m.vdis), sorted(m.snapshots))
    for name in what.vdis:
        vm = m.vdis[name]
        try:
            with Vdi(c, name, writable=False) as v:
                got = v.pread(VDI_SIZE, 0)
        except SheepdogError as e:
            wrong.append(f"{name}: cannot be read: {e}")
            continue
        bad = vm.check(got)
        if bad:
            wrong.append(f"{name}: {len(bad)} sectors hold bytes never written there "
                         f"(first at {bad[0] * SECTOR})")
        else:
            vm.survived(got)
    for name, tag in what.snapshots:
        want = m.snapshots[(name, tag)]
        try:
            with Vdi(c, name, tag=tag, writable=False) as v:
                got = v.pread(VDI_SIZE, 0)
        except SheepdogError as e:
            wrong.append(f"{name}@{tag}: cannot be read: {e}")
            continue
        if got != want:
            wrong.append(f"{name}@{tag}: differs from the flushed state it was taken of")
    for name in sorted(m.deleted - set(m.vdis)):
        try:
            c.lookup_vdi(name)
            wrong.append(f"{name}: deleted, and back")
        except SheepdogError as e:
            if e.result != Res.NO_VDI:
                wrong.append(f"{name}: lookup failed: {e}")
    for name, tag in sorted(m.deleted_snapshots):
        try:
            c.lookup_vdi(name, tag=tag)
            wrong.append(f"{name}@{tag}: deleted, and back")
        except SheepdogError as e:
            if e.result not in (Res.NO_VDI, Res.NO_TAG):
                wrong.append(f"{name}@{tag}: lookup failed: {e}")
    return wrong
