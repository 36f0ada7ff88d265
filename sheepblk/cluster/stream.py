"""Records in a driver's ordered log, and the fold that turns them into events.

Why a shared fold: both drivers keep a totally ordered log of small records
(join, leave, message) and let every member derive membership by replaying
it. As long as every member applies the same records in the same order with
this one pure function, all of them deliver the same events with the same
`seq` numbers; no member has to be trusted to announce the membership.

Rules that make duplicates and races harmless (each member derives the same
answer, so nothing needs a leader):
- a `leave` of an incarnation that is not a member is ignored, so several
  survivors may append a leave for the same death and one Left results;
- a `join` of a node whose address is already a member (a restarted sheep
  whose previous incarnation's death was not yet noticed, or a re-join
  after a ZooKeeper session loss) first emits Left for the old incarnation;
- a `msg` from an incarnation that is not a member is dropped.
Members are identified by an incarnation id (`uid`), unique per join, so a
node that leaves and comes back is a new member.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ..proto import NodeId, SdNode
from .driver import Event, Joined, Left, Message


class LogFormatError(ValueError):
    """A log record we cannot parse (a foreign or corrupted log)."""


def node_to_json(node: SdNode) -> list[Any]:
    return [node.nid.addr, node.nid.port, node.nr_vnodes, node.zone, node.space]


def node_from_json(raw: list[Any]) -> SdNode:
    addr, port, vnodes, zone, space = raw
    return SdNode(NodeId(str(addr), int(port)), int(vnodes), int(zone), int(space))


def encode_join(uid: str, node: SdNode) -> bytes:
    return json.dumps({"t": "join", "id": uid, "node": node_to_json(node)}).encode()


def encode_leave(uid: str) -> bytes:
    return json.dumps({"t": "leave", "id": uid}).encode()


def encode_msg(uid: str, payload: bytes) -> bytes:
    return json.dumps({"t": "msg", "id": uid, "p": base64.b64encode(payload).decode()}).encode()


def decode(raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except ValueError as e:
        raise LogFormatError(f"unreadable record {raw[:60]!r}") from e
    if not isinstance(rec, dict) or rec.get("t") not in ("join", "leave", "msg", "base", "rotate"):
        raise LogFormatError(f"unknown record {raw[:60]!r}")
    return rec


@dataclass
class Membership:
    """Membership as of some point in the log, and the next event's seq."""

    seq: int = 0
    members: dict[str, SdNode] = field(default_factory=dict)  # uid -> node, join order

    def nodes(self) -> tuple[SdNode, ...]:
        return tuple(self.members.values())

    def apply(self, rec: dict[str, Any]) -> list[Event]:
        """Fold one record in; return the events it produces (0, 1 or 2)."""
        kind, uid = rec["t"], rec.get("id", "")
        out: list[Event] = []
        if kind == "join":
            node = node_from_json(rec["node"])
            if uid in self.members:
                return out
            for old_uid, old in list(self.members.items()):
                if old.nid == node.nid:
                    del self.members[old_uid]
                    out.append(Left(self._next(), old, self.nodes()))
            self.members[uid] = node
            out.append(Joined(self._next(), node, self.nodes()))
        elif kind == "leave":
            node_or_none = self.members.pop(uid, None)
            if node_or_none is not None:
                out.append(Left(self._next(), node_or_none, self.nodes()))
        elif kind == "msg":
            sender = self.members.get(uid)
            if sender is not None:
                out.append(Message(self._next(), sender, base64.b64decode(rec["p"])))
        return out

    def _next(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "members": [[u, node_to_json(n)] for u, n in self.members.items()]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Membership:
        return cls(int(raw["seq"]), {u: node_from_json(n) for u, n in raw["members"]})
