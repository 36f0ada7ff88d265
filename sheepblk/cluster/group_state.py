"""The state every member of a corosync CPG group folds the same way.

Why a fold of its own: CPG gives every member the same sequence of
deliveries and configuration changes from the moment it joins the group,
but nothing before. A sheep that joins must learn who is in the cluster,
and from which CPG address each member speaks (corosync reports a death
as an address, the stream names incarnations). So the driver's handshake
(corosync.py) turns CPG's events into records, and this pure class folds
them:

- `join` (uid, node, attempt) from a CPG address: the joiner asks to be
  let in. It becomes `pending`; nothing is emitted yet.
- `accept` (uid, attempt): the accepting member lets a pending joiner in
  at this point of the order: Joined, for every member and the joiner.
  An accept of an attempt that is no longer the pending one is ignored.
- `msg`/`part`: a message, as in stream.py.
- a configuration change: every member (and pending joiner) at an address
  that left is gone: one Left each, in the left list's order.

`to_json` is what an accept carries, taken right after the joiner's join
record: the joiner starts from it and folds, itself, every delivery it
buffered since its join, so it reaches the same state as everyone else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .cpg import Addr, ConfChg
from .driver import Event
from .stream import Membership, node_from_json


@dataclass(frozen=True)
class Pending:
    """A joiner waiting for its accept."""

    addr: Addr
    node: list[Any]  # stream.node_to_json
    attempt: int


class GroupState:
    """Membership, each member's CPG address, and the pending joiners."""

    def __init__(self) -> None:
        self.fold = Membership()
        self.addrs: dict[str, Addr] = {}  # member uid -> CPG address
        self.pending: dict[str, Pending] = {}  # joiner uid -> its request, in order

    def first(self) -> str | None:
        """The oldest member's uid: the one that accepts joiners."""
        return next(iter(self.fold.members), None)

    def join(self, uid: str, addr: Addr, node: list[Any], attempt: int) -> bool:
        """Record a join request; False if `uid` is a member already (its
        earlier attempt was accepted before this one came)."""
        if uid in self.fold.members:
            return False
        self.pending.pop(uid, None)  # a new attempt goes to the back
        self.pending[uid] = Pending(addr, node, attempt)
        return True

    def accept(self, uid: str, attempt: int) -> list[Event]:
        p = self.pending.get(uid)
        if p is None or p.attempt != attempt:
            return []
        del self.pending[uid]
        out = self.fold.apply({"t": "join", "id": uid, "node": p.node})
        self.addrs[uid] = p.addr
        self._forget_gone()
        return out

    def message(self, rec: dict[str, Any]) -> list[Event]:
        return self.fold.apply(rec)

    def confchg(self, cc: ConfChg) -> list[Event]:
        out: list[Event] = []
        for addr, _ in cc.left:
            for uid in [u for u in self.fold.members if self.addrs.get(u) == addr]:
                out += self.fold.apply({"t": "leave", "id": uid})
            for uid in [u for u, p in self.pending.items() if p.addr == addr]:
                del self.pending[uid]
        self._forget_gone()
        return out

    def _forget_gone(self) -> None:
        self.addrs = {u: a for u, a in self.addrs.items() if u in self.fold.members}

    def lost_majority(self, cc: ConfChg) -> bool:
        """Whether more than half of the members were lost with their
        corosync node at once (corosync's `nodedown`): this side of a
        network partition, or what is left of a cluster after most of it
        died. Sheepdog stops such a node rather than serve a split brain."""
        down = {a for a, reason in cc.left if reason == "nodedown"}
        lost = sum(1 for u in self.fold.members if self.addrs.get(u) in down)
        return lost > 0 and lost >= len(self.fold.members) // 2 + 1

    def to_json(self) -> dict[str, Any]:
        return {
            **self.fold.to_json(),
            "addrs": {u: list(a) for u, a in self.addrs.items()},
            "pending": [[u, list(p.addr), p.node, p.attempt] for u, p in self.pending.items()],
            "partial": [[u, k, [base64.b64encode(x).decode() for x in pieces]]
                        for (u, k), pieces in self.fold.partial.items()],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GroupState:
        st = cls()
        st.fold = Membership.from_json(raw)
        st.fold.partial = {(u, int(k)): [base64.b64decode(x) for x in pieces]
                           for u, k, pieces in raw["partial"]}
        st.addrs = {u: (int(a[0]), int(a[1])) for u, a in raw["addrs"].items()}
        for u, addr, node, attempt in raw["pending"]:
            node_from_json(node)  # a bad node fails here, not at its accept
            st.pending[u] = Pending((int(addr[0]), int(addr[1])), node, int(attempt))
        return st

