"""Cluster-operation messages carried by the driver's ordered stream.

A cluster operation with a *work* half travels twice, as Sheepdog's
sd_block/sd_notify do: a `block` message parks every node's stream at the
same point while the sender does the work, then a `notify` carrying the
result releases it and every node applies the *main* half. Operations with
only a main half send just the notify. The encoding is JSON metadata plus
raw headers and payload: no pickle, since a stream is shared with peers.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"SBK1"
_LEN = struct.Struct("<I")


class BadMessage(ValueError):
    pass


@dataclass
class ClusterMsg:
    kind: str  # "block" or "notify"
    op_id: int
    origin: str  # the sending node, "ADDR:PORT"
    req: bytes = bytes(48)
    data: bytes = b""
    owner: str = ""  # the client a lock belongs to
    result: int = 0
    rsp_args: bytes = bytes(28)
    blocked: bool = False  # a notify that ends a block
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        meta = json.dumps({
            "kind": self.kind, "op_id": self.op_id, "origin": self.origin,
            "owner": self.owner, "result": self.result, "blocked": self.blocked,
            "extra": self.extra,
        }).encode()
        return b"".join((MAGIC, _LEN.pack(len(meta)), meta, self.req, self.rsp_args, self.data))

    @classmethod
    def decode(cls, raw: bytes) -> ClusterMsg:
        if raw[:4] != MAGIC or len(raw) < 8:
            raise BadMessage("not a sheepblk cluster message")
        (n,) = _LEN.unpack_from(raw, 4)
        try:
            meta = json.loads(raw[8:8 + n])
        except ValueError as e:
            raise BadMessage(str(e)) from e
        rest = raw[8 + n:]
        if len(rest) < 76:
            raise BadMessage("truncated cluster message")
        return cls(meta["kind"], int(meta["op_id"]), meta["origin"], bytes(rest[:48]),
                   bytes(rest[76:]), meta.get("owner", ""), int(meta.get("result", 0)),
                   bytes(rest[48:76]), bool(meta.get("blocked")), meta.get("extra") or {})
