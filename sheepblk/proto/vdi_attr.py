"""struct sheepdog_vdi_attr: the attribute object of `dog vdi setattr`."""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import (
    SD_MAX_VDI_ATTR_KEY_LEN,
    SD_MAX_VDI_ATTR_VALUE_LEN,
    SD_MAX_VDI_LEN,
    SD_MAX_VDI_TAG_LEN,
)

_ATTR = struct.Struct(
    f"<{SD_MAX_VDI_LEN}s{SD_MAX_VDI_TAG_LEN}sQII{SD_MAX_VDI_ATTR_KEY_LEN}s"
)
SD_ATTR_HEADER_SIZE = _ATTR.size
SD_ATTR_OBJ_SIZE = SD_ATTR_HEADER_SIZE + SD_MAX_VDI_ATTR_VALUE_LEN


class VdiAttr(NamedTuple):
    name: str
    tag: str
    ctime: int
    snap_id: int
    key: str
    value: bytes = b""

    def pack(self) -> bytes:
        head = _ATTR.pack(self.name.encode(), self.tag.encode(), self.ctime,
                          self.snap_id, len(self.value), self.key.encode())
        return head + self.value.ljust(SD_MAX_VDI_ATTR_VALUE_LEN, b"\0")

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> VdiAttr:
        name, tag, ctime, snap_id, vlen, key = _ATTR.unpack_from(data)

        def s(b: bytes) -> str:
            return b.split(b"\0", 1)[0].decode("utf-8", "replace")

        value = bytes(data[SD_ATTR_HEADER_SIZE:SD_ATTR_HEADER_SIZE + vlen])
        return cls(s(name), s(tag), ctime, snap_id, s(key), value)
