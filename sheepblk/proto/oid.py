"""Object-id rules: which VDI and index an oid names, and what kind it is."""

from __future__ import annotations

from .constants import SD_DATA_OBJ_SIZE
from .inode import SD_INODE_SIZE
from .vdi_attr import SD_ATTR_OBJ_SIZE

VDI_SPACE_SHIFT = 32
SD_VDI_MASK = 0x00FFFFFF00000000
VDI_BIT = 1 << 63
VMSTATE_BIT = 1 << 62
VDI_ATTR_BIT = 1 << 61
VDI_BTREE_BIT = 1 << 60
LEDGER_BIT = 1 << 59
_TYPE_BITS = VDI_BIT | VMSTATE_BIT | VDI_ATTR_BIT | VDI_BTREE_BIT | LEDGER_BIT
_DATA_IDX_MASK = (1 << 32) - 1
# Kinds of objects whose size is not the VDI's object size.
_SIZED_BITS = VDI_BIT | VDI_ATTR_BIT | VDI_BTREE_BIT | LEDGER_BIT


def is_vdi_obj(oid: int) -> bool:
    """Whether `oid` names an inode object (VDI_BIT)."""
    return bool(oid & VDI_BIT)


def is_vmstate_obj(oid: int) -> bool:
    return bool(oid & VMSTATE_BIT)


def is_vdi_attr_obj(oid: int) -> bool:
    """Whether `oid` names a VDI attribute object."""
    return bool(oid & VDI_ATTR_BIT)


def is_vdi_btree_obj(oid: int) -> bool:
    return bool(oid & VDI_BTREE_BIT)


def is_ledger_obj(oid: int) -> bool:
    return bool(oid & LEDGER_BIT)


def is_data_obj(oid: int) -> bool:
    """Whether `oid` names a data object (no type bit set)."""
    return not oid & _TYPE_BITS


def data_oid_to_idx(oid: int) -> int:
    """The index of a data object within its VDI (bits 0-31)."""
    return oid & _DATA_IDX_MASK


def vid_to_vdi_oid(vid: int) -> int:
    """The oid of VDI `vid`'s inode object."""
    return VDI_BIT | (vid << VDI_SPACE_SHIFT)


def vid_to_data_oid(vid: int, idx: int) -> int:
    """The oid of data object `idx` owned by VDI `vid`."""
    return (vid << VDI_SPACE_SHIFT) | idx


def oid_to_vid(oid: int) -> int:
    """The VDI id an oid belongs to (bits 32-55)."""
    return (oid & SD_VDI_MASK) >> VDI_SPACE_SHIFT


def vid_to_attr_oid(vid: int, attrid: int) -> int:
    """The oid of attribute slot `attrid` of VDI `vid`."""
    return (vid << VDI_SPACE_SHIFT) | VDI_ATTR_BIT | attrid


def vid_to_btree_oid(vid: int, btreeid: int) -> int:
    return (vid << VDI_SPACE_SHIFT) | VDI_BTREE_BIT | btreeid


def vid_to_vmstate_oid(vid: int, idx: int) -> int:
    """The oid of vmstate object `idx` of VDI `vid` (QEMU savevm)."""
    return VMSTATE_BIT | (vid << VDI_SPACE_SHIFT) | idx


def get_objsize(oid: int, object_size: int = SD_DATA_OBJ_SIZE) -> int:
    """The size an object of this oid has (an inode is 12 MiB and change)."""
    if not oid & _SIZED_BITS:  # data (and vmstate) objects: the hot path
        return object_size
    if is_vdi_obj(oid):
        return SD_INODE_SIZE
    if is_vdi_attr_obj(oid):
        return SD_ATTR_OBJ_SIZE
    if is_vdi_btree_obj(oid):
        return 4 * (1 << 20)
    if is_ledger_obj(oid):
        return 1 << 22
    return object_size


def oid_name(oid: int) -> str:
    """The object's file name in a store: 16 lower-case hex digits."""
    return f"{oid:016x}"
