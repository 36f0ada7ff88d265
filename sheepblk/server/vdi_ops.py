"""VDI lookup, creation (fresh, clone, snapshot, rebase), deletion and
attributes, as Sheepdog's sheep/vdi.c does them.

These are the *work* halves of cluster operations: they run on the node a
client asked, while the cluster's ordered stream is blocked on it, and read
and write inode objects through the gateway. What every node must remember
afterwards (a new id in the bitmap, a snapshot flag) is returned in
`VdiOutcome` and applied by the caller on every node, in order.

VDI ids: the FNV-1a hash of the name, then the next free bit; a name's
family (its snapshots and the working VDI) sits in one run of set bits,
the working VDI last. With VID recycling (format -R) an id is the lowest
free one instead, and a family whose every member is deleted gives its
ids back (Sheep._recycle_family).

Lookups read no inode: the table's name index (vdi_table.py) holds each
VDI's name, tag and snap_id, and `lookup` walks the name's family in
Sheepdog's scan order over the bitmap. Two fallbacks read inodes: a VDI
whose name is unknown (its inode could not be read when it was
registered), and a lookup by tag that finds the name but no snapshot with
that tag. Why the second: the tag is the one naming field clients write
themselves (QEMU and dog write it into the working inode just before
NEW_VDI, which reads it then), and a WRITE_OBJ lands on one node only;
telling every node would cost a trip through the stream for each inode
header write. Writes to a snapshot's inode header are refused (READONLY),
so a snapshot's tag changes only by a client racing its own snapshot; a
miss then finds the new tag in the inodes, as Sheepdog would.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..proto import (
    SD_INODE_HEADER_SIZE,
    SD_MAX_VDI_LEN,
    SD_MAX_VDI_SIZE,
    SD_NR_VDIS,
    InodeHeader,
    Res,
    data_oid_to_idx,
    data_vid_offset,
    is_vdi_obj,
    oid_to_vid,
    sd_hash_vdi,
    vid_to_attr_oid,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from ..proto.constants import SD_MAX_VDI_TAG_LEN
from ..proto.fnv import FNV1A_64_INIT, fnv_64a_buf
from ..proto.inode import _HEADER as _INODE_HEADER
from ..proto.inode import DATA_VDI_ID_OFFSET, GREF_OFFSET
from ..proto.vdi_attr import SD_ATTR_HEADER_SIZE, SD_ATTR_OBJ_SIZE
from ..store import ObjectStore, StoreError
from . import hyper
from .gateway import Gateway
from .vdi_table import VdiEntry, VdiTable

_HEAD_LEN = _INODE_HEADER.size  # name .. btree_counter
SNAP_CTIME_OFFSET = 2 * SD_MAX_VDI_LEN + 8
VDI_SIZE_OFFSET = 2 * SD_MAX_VDI_LEN + 24
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ATTR_KEY_OFF = 2 * SD_MAX_VDI_LEN + 16


class VdiError(Exception):
    def __init__(self, result: int, msg: str = "") -> None:
        super().__init__(msg or f"result {result:#x}")
        self.result = result


def now_ctime() -> int:
    """Sheepdog's timestamps: seconds in the high 32 bits, ns below."""
    ns = time.time_ns()
    return ((ns // 10**9) << 32) | (ns % 10**9 // 1000 * 1000)


def parse_name(data: bytes | memoryview, *, with_tag: bool = True) -> tuple[bytes, bytes]:
    """(name, tag) from a request payload: a NUL-terminated name in the
    first 256 bytes, optionally a tag in the next 256."""
    raw = bytes(data)
    if not SD_MAX_VDI_LEN <= len(raw) <= SD_MAX_VDI_LEN + SD_MAX_VDI_TAG_LEN:
        raise VdiError(Res.INVALID_PARMS, f"name payload of {len(raw)} bytes")
    field = raw[:SD_MAX_VDI_LEN]
    if b"\0" not in field:
        raise VdiError(Res.INVALID_PARMS, "VDI name longer than 255 bytes")
    name = field.split(b"\0", 1)[0]
    if not name:
        raise VdiError(Res.INVALID_PARMS, "empty VDI name")
    tag = b""
    if with_tag and len(raw) > SD_MAX_VDI_LEN:
        tag = raw[SD_MAX_VDI_LEN:].split(b"\0", 1)[0]
    return name, tag


@dataclass
class LookupInfo:
    vid: int = 0
    snapid: int = 0  # next snapshot id for the name
    create_time: int = 0
    free_bit: int = 0


@dataclass
class VdiOutcome:
    """What a VDI operation changed, to apply on every node."""

    vid: int
    copies: int = 0
    copy_policy: int = 0
    block_size_shift: int = 22
    old_vid: int = 0  # became a snapshot
    parent: int = 0
    attr_id: int = 0
    name: bytes = b""
    snap_id: int = 0
    create_time: int = 0
    old_tag: bytes = b""  # the tag old_vid's inode held when it became a snapshot


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def inode_names(raw: bytes | memoryview) -> tuple[bytes, bytes]:
    """(name, tag) from the first bytes of an inode, as stored."""
    b = bytes(raw[:2 * SD_MAX_VDI_LEN])
    return _cstr(b[:SD_MAX_VDI_LEN]), _cstr(b[SD_MAX_VDI_LEN:])


class VdiOps:
    def __init__(self, gateway: Gateway, table: VdiTable,
                 recycle: Callable[[], bool] = lambda: False) -> None:
        self.gw = gateway
        self.table = table
        # VID recycling (`dog cluster format -R`): ids are the lowest free
        # ones, not hashes of names, so a name may sit anywhere.
        self.recycle = recycle

    def _copies(self, vid: int) -> int:
        e = self.table.get(vid)
        return e.copies if e else 0

    async def read_head(self, vid: int) -> tuple[bytes, bytes, InodeHeader]:
        """(raw name, raw tag, header) of a VDI's inode."""
        buf = memoryview(bytearray(_HEAD_LEN))
        await self.gw.read(vid_to_vdi_oid(vid), 0, buf, copies=self._copies(vid))
        raw = bytes(buf)
        return _cstr(raw[:SD_MAX_VDI_LEN]), _cstr(raw[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN]), \
            InodeHeader.unpack(raw)

    async def read_index(self, vid: int, count: int) -> list[int]:
        if count <= 0:
            return []
        buf = memoryview(bytearray(4 * count))
        await self.gw.read(vid_to_vdi_oid(vid), data_vid_offset(0), buf,
                           copies=self._copies(vid))
        return list(struct.unpack(f"<{count}I", buf))

    # ---- lookup ----

    def _bitmap_range(self, name: bytes) -> tuple[int, int]:
        left = sd_hash_vdi(name) or 1
        inuse = self.table.inuse
        right = inuse.next_zero(left)
        if left == right:
            raise _NoVdi(right)
        if right == SD_NR_VDIS:
            right = inuse.next_zero(1)
            if right == SD_NR_VDIS:
                raise VdiError(Res.FULL_VDI)
        return left, right

    def _candidates(self, left: int, right: int, name: bytes, scan: bool) -> list[int]:
        """The ids in [left, right) whose inode may carry `name`, in
        Sheepdog's scan order (downwards): with `scan`, every id in use."""
        t = self.table
        if scan:
            return [i for i in range(right - 1, max(left, 1) - 1, -1)
                    if t.inuse.test(i) or t.deleted.test(i)]
        vids = t.family(name) | t.unnamed if t.unnamed else t.family(name)
        return sorted((v for v in vids if left <= v < right and v), reverse=True)

    async def _facts(self, vid: int, scan: bool) -> tuple[bytes, bytes, int, bool, int]:
        """(name, tag, snap_id, is snapshot, create_time) of `vid`: from the
        index, or from its inode when unknown there (or when `scan`)."""
        e = self.table.get(vid)
        if e is not None and e.named and not scan:
            return e.name, e.tag, e.snap_id, e.snapshot, e.create_time
        iname, itag, head = await self.read_head(vid)
        return iname, itag, head.snap_id, head.is_snapshot, head.create_time

    async def _fill_range(self, left: int, right: int, name: bytes, tag: bytes,
                          snapid: int, info: LookupInfo, scan: bool = False) -> int:
        has_tag = bool(tag) or bool(snapid)
        found = False
        for i in self._candidates(left, right, name, scan):
            iname, itag, isnap, is_snapshot, ctime = await self._facts(i, scan)
            if iname != name:
                continue
            if has_tag:
                if not is_snapshot:
                    found = True
                    info.vid = i
                    continue
                if not ((itag and itag == tag) or snapid == isnap):
                    continue
            else:
                info.snapid = isnap + 1
                if is_snapshot:  # the working VDI was deleted
                    info.vid = i
                    break
            info.create_time = ctime
            info.vid = i
            return Res.SUCCESS
        return Res.NO_TAG if found else Res.NO_VDI

    async def lookup(self, name: bytes, tag: bytes = b"", snapid: int = 0) -> tuple[int, LookupInfo]:
        """Sheepdog's vdi_lookup: (result, info); info.free_bit is where a
        new VDI of this name would go. Reads no inode unless a fallback of
        the module docstring applies."""
        ret, info = await self._lookup(name, tag, snapid, scan=False)
        if ret == Res.NO_TAG and tag and not snapid:
            ret, info = await self._lookup(name, tag, snapid, scan=True)
        return ret, info

    async def _lookup(self, name: bytes, tag: bytes, snapid: int, *,
                      scan: bool) -> tuple[int, LookupInfo]:
        info = LookupInfo()
        if self.recycle():
            return await self._lookup_recycled(name, tag, snapid, info, scan), info
        try:
            left, right = self._bitmap_range(name)
        except _NoVdi as e:
            info.free_bit = e.free_bit
            return Res.NO_VDI, info
        info.free_bit = right
        if left < right:
            return await self._fill_range(left, right, name, tag, snapid, info, scan), info
        ret: int = Res.NO_VDI
        if right > 1:
            ret = await self._fill_range(1, right, name, tag, snapid, info, scan)
        if ret in (Res.NO_VDI, Res.NO_TAG):
            ret = await self._fill_range(left, SD_NR_VDIS, name, tag, snapid, info, scan)
        return ret, info

    async def _lookup_recycled(self, name: bytes, tag: bytes, snapid: int, info: LookupInfo,
                               scan: bool) -> int:
        """Sheepdog's vdi_lookup under VID recycling: the whole bitmap is
        the range, a new VDI takes the lowest free id. A name whose working
        VDI was deleted while its snapshots live counts as existing: a new
        working VDI would not descend from them."""
        info.free_bit = self.table.inuse.next_zero(1)
        if info.free_bit == SD_NR_VDIS:
            return Res.FULL_VDI
        ret = await self._fill_range(1, SD_NR_VDIS, name, tag, snapid, info, scan)
        if ret == Res.NO_VDI and info.vid and self.table.inuse.test(info.vid):
            return Res.SUCCESS
        return ret

    async def find(self, name: bytes, tag: bytes = b"", snapid: int = 0) -> int:
        ret, info = await self.lookup(name, tag, snapid)
        if ret != Res.SUCCESS:
            raise VdiError(ret)
        return info.vid

    # ---- creation ----

    async def _write_new_inode(self, head: InodeHeader, index: list[int]) -> None:
        body = head.pack()
        if index:
            body += struct.pack(f"<{len(index)}I", *index)
        await self.gw.create_and_write(vid_to_vdi_oid(head.vdi_id), 0, memoryview(body),
                                       sync=True, copies=head.nr_copies)

    async def _base(self, vid: int) -> tuple[bytes, InodeHeader, list[int]]:
        """(tag, header, index) of the VDI a new one is made from."""
        try:
            _, tag, head = await self.read_head(vid)
            if head.store_policy == hyper.HYPER_VOLUME:
                raise VdiError(Res.NO_SUPPORT, "snapshots and clones of hyper volumes")
            return tag, head, await self.read_index(vid, head.nr_objects)
        except VdiError:
            raise
        except Exception as e:  # noqa: BLE001 - any read failure is "no base"
            raise VdiError(Res.BASE_VDI_READ, str(e)) from e

    async def _set_snap_ctime(self, vid: int, ctime: int) -> None:
        await self.gw.write(vid_to_vdi_oid(vid), SNAP_CTIME_OFFSET,
                            memoryview(_U64.pack(ctime)), sync=True, copies=self._copies(vid))

    async def create(self, name: bytes, size: int, *, base_vid: int, snapshot: bool,
                     copies: int, copy_policy: int, store_policy: int,
                     block_size_shift: int) -> VdiOutcome:
        if size > SD_MAX_VDI_SIZE:
            raise VdiError(Res.INVALID_PARMS, f"VDI size {size} too large")
        ret, info = await self.lookup(name)
        ctime = now_ctime()
        old_tag = b""
        if snapshot:
            if ret != Res.SUCCESS:
                raise VdiError(ret)
            cur = info.vid
            base_vid = base_vid or cur
            new_vid = info.free_bit
            old_tag, base, index = await self._base(base_vid)
            # The snapshot's tag: what the client wrote into the inode just
            # before (QEMU, dog), so it is read now, not taken from NEW_VDI.
            if base_vid != cur:
                try:
                    _, old_tag, _ = await self.read_head(cur)
                except Exception as e:  # noqa: BLE001
                    raise VdiError(Res.BASE_VDI_READ, str(e)) from e
            await self._set_snap_ctime(cur, ctime)
            snap_id, old_vid = info.snapid, cur
            size = size or base.vdi_size
        else:
            if ret == Res.SUCCESS:
                raise VdiError(Res.VDI_EXIST)
            if ret != Res.NO_VDI:
                raise VdiError(ret)
            new_vid = info.free_bit
            snap_id = info.snapid or 1
            index = []
            old_vid = base_vid or info.vid
            if base_vid:
                _, base, index = await self._base(base_vid)
        head = InodeHeader(
            name=name.decode("utf-8", "surrogateescape"), create_time=ctime, vdi_size=size,
            copy_policy=copy_policy, store_policy=store_policy, nr_copies=copies,
            block_size_shift=block_size_shift, snap_id=snap_id, vdi_id=new_vid,
            parent_vdi_id=base_vid)
        # pack() encodes the str; keep the client's exact bytes instead.
        head_bytes = bytearray(head.pack())
        head_bytes[:SD_MAX_VDI_LEN] = name.ljust(SD_MAX_VDI_LEN, b"\0")
        body = bytes(head_bytes) + (struct.pack(f"<{len(index)}I", *index) if index
                                    else hyper.new_root(store_policy))
        try:
            await self.gw.create_and_write(vid_to_vdi_oid(new_vid), 0, memoryview(body),
                                           sync=True, copies=copies)
        except Exception as e:  # noqa: BLE001
            raise VdiError(Res.VDI_WRITE, str(e)) from e
        return VdiOutcome(new_vid, copies, copy_policy, block_size_shift, old_vid, base_vid,
                          name=name, snap_id=snap_id, create_time=ctime, old_tag=old_tag)

    # ---- deletion ----

    async def delete(self, name: bytes, tag: bytes, snapid: int) -> VdiOutcome:
        vid = await self.find(name, tag, snapid)
        if self.table.is_locked(vid):
            raise VdiError(Res.VDI_LOCKED)
        _, _, head = await self.read_head(vid)
        is_hyper = head.store_policy == hyper.HYPER_VOLUME
        n = 0 if is_hyper else head.nr_objects
        index = await self.read_index(vid, n)
        oid = vid_to_vdi_oid(vid)
        copies = self._copies(vid)
        await self.gw.write(oid, 0, memoryview(bytes(SD_MAX_VDI_LEN)), sync=True, copies=copies)
        await self.gw.write(oid, VDI_SIZE_OFFSET, memoryview(_U64.pack(0)), sync=True,
                            copies=copies)
        if is_hyper:
            await hyper.delete(self.gw, vid, copies)
        if n:
            await self.gw.write(oid, data_vid_offset(0), memoryview(bytes(4 * n)), sync=True,
                                copies=copies)
            # Sheepdog's dog zeroes the index itself before DEL_VDI (then
            # `index` is all zeros here and the frees happened on its
            # writes, see index_before/index_after); QEMU and our dog don't.
            await self.free_unmapped(vid, 0, index, [0] * n)
        return VdiOutcome(vid)

    # ---- freeing objects nobody maps any more ----
    #
    # Sheepdog 1.0 frees data objects when a write to an inode's
    # data_vdi_id[] replaces an entry (gateway_write_obj: the old owner's
    # reference count drops). We keep no reference counts: an object
    # vid_to_data_oid(owner, idx) is referenced only through entry idx of
    # some inode, so when an entry stops naming an owner that is the VDI
    # itself or a deleted VDI, the other inodes' entry idx are read and the
    # object is removed if none names that owner. Objects of a live
    # snapshot or of another live VDI are never candidates: their own inode
    # still maps them. "The other inodes" are only those that may name the
    # owner's objects (VdiTable.may_name: the owner's descendants), not
    # every live VDI's.

    def index_range(self, oid: int, offset: int, length: int) -> tuple[int, int] | None:
        """(first entry, count) when a write at offset..offset+length of
        `oid` covers whole data_vdi_id entries, else None."""
        if not is_vdi_obj(oid) or length <= 0:
            return None
        lo = max(offset, DATA_VDI_ID_OFFSET)
        hi = min(offset + length, GREF_OFFSET)
        if lo >= hi or (lo - offset) % 4 or (lo - DATA_VDI_ID_OFFSET) % 4 or (hi - lo) % 4:
            return None
        return (lo - DATA_VDI_ID_OFFSET) // 4, (hi - lo) // 4

    def _new_entries(self, offset: int, data: memoryview, start: int, count: int) -> list[int]:
        pos = data_vid_offset(start) - offset
        return list(struct.unpack_from(f"<{count}I", data, pos))

    async def index_before(self, oid: int, offset: int, data: memoryview) -> list[int] | None:
        """Before a client's write to an inode: the entries it replaces,
        or None when nothing can become unreferenced (the common QEMU case:
        pointing entries at the VDI itself while no VDI is deleted)."""
        rng = self.index_range(oid, offset, len(data))
        if rng is None:
            return None
        start, count = rng
        vid = oid_to_vid(oid)
        new = self._new_entries(offset, data, start, count)
        if all(v == vid for v in new) and not self.table.any_deleted():
            return None
        if await hyper.is_hyper_write(self.gw, oid, offset, data, self._copies(vid)):
            return None  # B-tree bytes, not entries
        buf = memoryview(bytearray(4 * count))
        await self.gw.read(oid, data_vid_offset(start), buf, copies=self._copies(vid))
        return list(struct.unpack(f"<{count}I", buf))

    async def index_after(self, oid: int, offset: int, data: memoryview,
                          old: list[int], *, durable: bool) -> None:
        """After a client's write to an inode (`durable`: a sync write)."""
        rng = self.index_range(oid, offset, len(data))
        assert rng is not None
        start, count = rng
        await self.free_unmapped(oid_to_vid(oid), start, old,
                                 self._new_entries(offset, data, start, count),
                                 durable=durable)

    async def free_unmapped(self, vid: int, start: int, old: list[int],
                            new: list[int], *, durable: bool = True) -> list[int]:
        """Remove the objects that entries start.. of `vid` stopped naming
        and that no other inode names; returns their oids.

        `durable` says whether the new entries are on disk already. When
        they are not (a cached write to the index), the inode's copies are
        flushed before anything is removed: a removal may reach the disk
        before the index write, and after a power cut the old entries,
        still naming the object, would read "No object found" where losing
        an unflushed write must leave the older bytes."""
        cand: dict[int, int] = {}
        for i, (o, n) in enumerate(zip(old, new, strict=True)):
            if o and o != n and (o == vid or self.table.deleted.test(o)):
                cand[start + i] = o
        if not cand:
            return []
        lo, hi = min(cand), max(cand)
        for e in self.table.may_name(set(cand.values())):
            if e.vid == vid or not cand:
                continue
            buf = memoryview(bytearray(4 * (hi - lo + 1)))
            try:
                await self.gw.read(vid_to_vdi_oid(e.vid), data_vid_offset(lo), buf,
                                   copies=e.copies)
            except Exception:  # noqa: BLE001 - an unreadable inode: keep everything
                return []
            entries = struct.unpack(f"<{hi - lo + 1}I", buf)
            for idx in [i for i, o in cand.items() if entries[i - lo] == o]:
                del cand[idx]
        if not cand:
            return []
        if not durable:
            await self.gw.flush(self.gw.owners(vid_to_vdi_oid(vid), self._copies(vid)))
        freed = []
        for idx, owner in sorted(cand.items()):
            data_oid = vid_to_data_oid(owner, idx)
            try:
                await self.gw.remove(data_oid, copies=self._copies(owner))
                freed.append(data_oid)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass
        return freed

    async def is_mapped(self, oid: int) -> bool | None:
        """Whether some live inode's data_vdi_id[] names data object `oid`
        (its own VDI's first, then the others'); None when that cannot be
        told (an unknown VDI, an unreadable inode)."""
        owner, idx = oid_to_vid(oid), data_oid_to_idx(oid)
        if self.table.get(owner) is None:
            return None
        live = sorted(self.table.may_name([owner]), key=lambda e: e.vid != owner)
        for e in live:
            try:
                if await hyper.index_owner(self.gw, e.vid, idx, e.copies) == owner:
                    return True
            except Exception:  # noqa: BLE001 - cannot tell: the caller keeps it
                return None
        return False

    # ---- attributes (dog vdi setattr/getattr) ----

    async def attr(self, data: memoryview, snapid: int, *, create: bool, excl: bool,
                   delete: bool) -> VdiOutcome:
        if len(data) < SD_ATTR_HEADER_SIZE or len(data) > SD_ATTR_OBJ_SIZE:
            raise VdiError(Res.INVALID_PARMS, "bad attribute payload")
        raw = bytearray(data)
        name = _cstr(bytes(raw[:SD_MAX_VDI_LEN]))
        tag = _cstr(bytes(raw[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN]))
        ret, info = await self.lookup(name, tag, snapid)
        if ret != Res.SUCCESS:
            raise VdiError(ret)
        vid = sd_hash_vdi(name)
        raw[2 * SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN + 8] = _U64.pack(info.create_time)
        h = fnv_64a_buf(bytes(raw[:SD_MAX_VDI_LEN]), FNV1A_64_INIT)
        h = fnv_64a_buf(bytes(raw[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN]), h)
        h = fnv_64a_buf(bytes(raw[2 * SD_MAX_VDI_LEN + 8:2 * SD_MAX_VDI_LEN + 12]), h)
        key_field = bytes(raw[_ATTR_KEY_OFF:_ATTR_KEY_OFF + 256])
        h = fnv_64a_buf(key_field, h)
        attr_id = h & 0xFFFFFFFF
        copies = self._copies(info.vid)
        for _ in range(1 << 16):
            oid = vid_to_attr_oid(vid, attr_id)
            cur = memoryview(bytearray(SD_ATTR_HEADER_SIZE))
            try:
                await self.gw.read(oid, 0, cur, copies=copies)
                exists = True
            except Exception as e:  # noqa: BLE001
                if getattr(e, "result", None) != Res.NO_OBJ:
                    raise
                exists = False
            if not exists:
                if create and not delete:
                    await self.gw.create_and_write(oid, 0, memoryview(raw), sync=True,
                                                   copies=copies)
                    return VdiOutcome(vid, copies, attr_id=attr_id)
                raise VdiError(Res.NO_OBJ)
            c = bytes(cur)
            if (_cstr(c[:SD_MAX_VDI_LEN]) == name
                    and _cstr(c[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN]) == tag
                    and c[2 * SD_MAX_VDI_LEN + 8:2 * SD_MAX_VDI_LEN + 12]
                    == raw[2 * SD_MAX_VDI_LEN + 8:2 * SD_MAX_VDI_LEN + 12]
                    and _cstr(c[_ATTR_KEY_OFF:_ATTR_KEY_OFF + 256]) == _cstr(key_field)):
                if excl:
                    raise VdiError(Res.VDI_EXIST)
                if delete:
                    await self.gw.write(oid, 0, memoryview(b"\0"), sync=True, copies=copies)
                elif create:
                    full = bytes(raw).ljust(SD_ATTR_OBJ_SIZE, b"\0")
                    await self.gw.write(oid, 0, memoryview(full), sync=True, copies=copies)
                return VdiOutcome(vid, copies, attr_id=attr_id)
            attr_id = (attr_id + 1) & 0xFFFFFFFF
        raise VdiError(Res.FULL_VDI)


class _NoVdi(Exception):
    def __init__(self, free_bit: int) -> None:
        self.free_bit = free_bit


def head_size() -> int:
    return SD_INODE_HEADER_SIZE


# ---- the table at start-up ----

def stored_inodes(store: ObjectStore) -> list[bytes]:
    """The header of every inode object this node stores (blocking; an
    unreadable one is skipped: recovery or repair deals with it), and of
    the newest stale copy of each inode not in obj/: a node that came back
    to a running cluster moved everything it held to .stale/, and if the
    cluster stops again before recovery brought the inodes back, they are
    what it knows of those VDIs (Sheepdog's start-up reads .stale/ too)."""
    out = []
    held = set()
    for oid in store.oids():
        if is_vdi_obj(oid):
            held.add(oid)
            buf = memoryview(bytearray(SD_INODE_HEADER_SIZE))
            try:
                store.read_into(oid, 0, buf)
            except StoreError:
                continue
            out.append(bytes(buf))
    newest: dict[int, int] = {}
    for oid, ep in store.stale_copies():
        if is_vdi_obj(oid) and oid not in held and ep > newest.get(oid, -1):
            newest[oid] = ep
    for oid, ep in newest.items():
        buf = memoryview(bytearray(SD_INODE_HEADER_SIZE))
        try:
            store.read_stale(oid, ep, buf)
        except StoreError:
            continue
        out.append(bytes(buf))
    return out


def add_inodes(table: VdiTable, headers: list[bytes]) -> None:
    """Rebuild the VDI table from stored inode headers: a node knows the
    VDIs whose inodes it holds before any other node tells it more."""
    for raw in headers:
        h = InodeHeader.unpack(raw)
        if not h.vdi_id:
            continue
        name, tag = inode_names(raw)
        table.add(VdiEntry(h.vdi_id, h.nr_copies, h.copy_policy, h.block_size_shift,
                           h.is_snapshot, deleted=not name, parent=h.parent_vdi_id,
                           name=name, tag=tag, snap_id=h.snap_id,
                           create_time=h.create_time, named=True))
