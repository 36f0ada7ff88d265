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

A payload too big for one record (a ZooKeeper znode is limited to ~1 MB)
is sent as `part` records (encode_parts): each carries a slice of the
payload, the writer's key for the message and its index out of `n`. The
fold buffers the slices and emits one Message at the position of the
LAST part; parts from a non-member are dropped, and a sender that leaves
mid-message takes its partial message with it. Partial buffers are not
part of `to_json`: a checkpoint must be taken where `busy` is False.
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


def encode_parts(uid: str, key: int, payload: bytes, chunk: int) -> list[bytes]:
    """`payload` as part records of at most `chunk` payload bytes each."""
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    return [json.dumps({"t": "part", "id": uid, "k": key, "i": i, "n": len(pieces),
                        "p": base64.b64encode(piece).decode()}).encode()
            for i, piece in enumerate(pieces)]


def decode(raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except ValueError as e:
        raise LogFormatError(f"unreadable record {raw[:60]!r}") from e
    if not isinstance(rec, dict) or rec.get("t") not in ("join", "leave", "msg", "part", "base", "rotate"):
        raise LogFormatError(f"unknown record {raw[:60]!r}")
    return rec


@dataclass
class Membership:
    """Membership as of some point in the log, and the next event's seq."""

    seq: int = 0
    members: dict[str, SdNode] = field(default_factory=dict)  # uid -> node, join order
    # (uid, key) -> the slices of a split message received so far
    partial: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """A split message is half-way: this state cannot be checkpointed."""
        return bool(self.partial)

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
            for key in [k for k in self.partial if k[0] == uid]:
                del self.partial[key]
        elif kind == "msg":
            sender = self.members.get(uid)
            if sender is not None:
                out.append(Message(self._next(), sender, base64.b64decode(rec["p"])))
        elif kind == "part":
            if uid not in self.members:  # never buffered: it could not complete
                return out
            key = (uid, int(rec["k"]))
            pieces = self.partial.setdefault(key, [])
            if int(rec["i"]) != len(pieces):  # a gap: the writer re-sends it whole
                del self.partial[key]
                return out
            pieces.append(base64.b64decode(rec["p"]))
            if len(pieces) == int(rec["n"]):
                del self.partial[key]
                sender = self.members.get(uid)
                if sender is not None:
                    out.append(Message(self._next(), sender, b"".join(pieces)))
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
