"""The inode object (struct sd_inode): a VDI's metadata and object index.

Real clients read the header alone (SD_INODE_HEADER_SIZE bytes) or update a
single `data_vdi_id` entry at `data_vid_offset(idx)`, so the layout is kept
byte for byte: header, 1023 unused words, 2^20 data_vdi_id entries, 2^20
generation references.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import SD_INODE_DATA_INDEX, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN

_HEADER = struct.Struct(f"<{SD_MAX_VDI_LEN}s{SD_MAX_VDI_TAG_LEN}sQQQQQBBBBIIII")
OLD_MAX_CHILDREN = 1024
# name, tag, 5 u64, 4 u8, snap_id, vdi_id, parent_vdi_id, btree_counter,
# then the rest of the old child_vdi_id[1024] array.
SD_INODE_HEADER_SIZE = _HEADER.size + 4 * (OLD_MAX_CHILDREN - 1)
DATA_VDI_ID_OFFSET = SD_INODE_HEADER_SIZE
# nr_copies: after name, tag, five 64-bit words, copy_policy and store_policy.
NR_COPIES_OFFSET = SD_MAX_VDI_LEN + SD_MAX_VDI_TAG_LEN + 5 * 8 + 2
SD_INODE_DATA_INDEX_SIZE = 4 * SD_INODE_DATA_INDEX
GREF_OFFSET = DATA_VDI_ID_OFFSET + SD_INODE_DATA_INDEX_SIZE
SD_INODE_SIZE = GREF_OFFSET + 8 * SD_INODE_DATA_INDEX

assert _HEADER.size == 572
assert SD_INODE_HEADER_SIZE == 4664


def data_vid_offset(idx: int) -> int:
    """Byte offset of data_vdi_id[idx] inside the inode object."""
    return DATA_VDI_ID_OFFSET + 4 * idx


def gref_offset(idx: int) -> int:
    return GREF_OFFSET + 8 * idx


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class InodeHeader:
    """The fixed fields before data_vdi_id[]."""

    name: str = ""
    tag: str = ""
    create_time: int = 0
    snap_ctime: int = 0
    vm_clock_nsec: int = 0
    vdi_size: int = 0
    vm_state_size: int = 0
    copy_policy: int = 0
    store_policy: int = 0
    nr_copies: int = 0
    block_size_shift: int = 22
    snap_id: int = 0
    vdi_id: int = 0
    parent_vdi_id: int = 0
    btree_counter: int = 0

    @property
    def is_snapshot(self) -> bool:
        return self.snap_ctime != 0

    @property
    def object_size(self) -> int:
        return 1 << self.block_size_shift

    @property
    def nr_objects(self) -> int:
        """How many data objects the VDI's size spans."""
        return -(-self.vdi_size // self.object_size)

    def pack(self) -> bytes:
        """SD_INODE_HEADER_SIZE bytes (the unused words are zero)."""
        fixed = _HEADER.pack(
            self.name.encode(), self.tag.encode(), self.create_time,
            self.snap_ctime, self.vm_clock_nsec, self.vdi_size,
            self.vm_state_size, self.copy_policy, self.store_policy,
            self.nr_copies, self.block_size_shift, self.snap_id, self.vdi_id,
            self.parent_vdi_id, self.btree_counter,
        )
        return fixed + bytes(SD_INODE_HEADER_SIZE - len(fixed))

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> InodeHeader:
        f = _HEADER.unpack_from(data)
        return cls(_cstr(f[0]), _cstr(f[1]), *f[2:])


@dataclass
class Inode:
    """A whole inode: header plus the data_vdi_id index (gref left zero).

    `data_vdi_id` is kept as a mutable array of 2^20 u32; entries past the
    VDI's size stay zero.
    """

    header: InodeHeader = field(default_factory=InodeHeader)
    data_vdi_id: list[int] = field(default_factory=lambda: [0] * SD_INODE_DATA_INDEX)

    def pack_prefix(self) -> bytes:
        """Header and index: the bytes a client writes when creating a VDI
        (everything up to gref, which stays zero/sparse)."""
        return self.header.pack() + struct.pack(f"<{SD_INODE_DATA_INDEX}I", *self.data_vdi_id)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Inode:
        """Decode from at least the header; a short index reads as zeros."""
        header = InodeHeader.unpack(data)
        avail = max(0, min(len(data) - DATA_VDI_ID_OFFSET, SD_INODE_DATA_INDEX_SIZE)) // 4
        ids = list(struct.unpack_from(f"<{avail}I", data, DATA_VDI_ID_OFFSET)) if avail else []
        ids.extend([0] * (SD_INODE_DATA_INDEX - len(ids)))
        return cls(header, ids)
