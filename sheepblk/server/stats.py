"""Request counters a sheep keeps on its hot path.

Why plain dicts and ints, not prometheus_client's Counter and Histogram:
those take a lock and look up their label set on every increment, a few
microseconds a request; a sheep serves tens of thousands of requests a
second from one thread. Here a request costs a dict update, a bisect and
a few additions; metrics.py turns these numbers into Prometheus metric
families only when someone scrapes, and `dog node stat` reads the same
numbers (SD_OP_STAT, as C sheep's struct sd_stat).

Everything here runs in the trio thread: no locking.
"""

from __future__ import annotations

from bisect import bisect_left

from ..metrics.buckets import LATENCY_BOUNDS
from ..proto import Op, SdStat

# The ops whose latency is kept, by (role, io): the gateway's are a
# client's requests, the peer's are what a gateway asks of a copy's node.
LATENCY_OPS: dict[int, tuple[str, str]] = {
    Op.READ_OBJ: ("gateway", "read"),
    Op.WRITE_OBJ: ("gateway", "write"),
    Op.CREATE_AND_WRITE_OBJ: ("gateway", "write"),
    Op.FLUSH_VDI: ("gateway", "flush"),
    Op.READ_PEER: ("peer", "read"),
    Op.WRITE_PEER: ("peer", "write"),
    Op.CREATE_AND_WRITE_PEER: ("peer", "write"),
    Op.FLUSH_PEER: ("peer", "flush"),
}

# What C sheep's struct sd_stat counts per op, by role (gateway or peer).
_GATEWAY_OPS = {Op.READ_OBJ, Op.WRITE_OBJ, Op.CREATE_AND_WRITE_OBJ, Op.REMOVE_OBJ,
                Op.DISCARD_OBJ, Op.FLUSH_VDI}
_PEER_OPS = {Op.READ_PEER, Op.WRITE_PEER, Op.CREATE_AND_WRITE_PEER, Op.REMOVE_PEER,
             Op.FLUSH_PEER}


def role_of(opcode: int) -> str:
    """"gateway" for a client's object I/O, "peer" for a sheep's, else "other"."""
    if opcode in _GATEWAY_OPS:
        return "gateway"
    if opcode in _PEER_OPS:
        return "peer"
    return "other"


class Histogram:
    """Counts per bucket (not cumulative) and the sum of what was seen."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self.total = 0.0

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs as Prometheus wants them, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*map(str, LATENCY_BOUNDS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class RequestStats:
    """What the connections of one sheep served: per (opcode, result)
    counts, latencies of object I/O, bytes in and out per role, requests
    in flight per role and open connections."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {
            key: Histogram() for key in sorted(set(LATENCY_OPS.values()))}
        self._hist_of = {op: self.latency[key] for op, key in LATENCY_OPS.items()}
        self._role: dict[int, str] = {int(op): role_of(op) for op in Op}
        self.bytes_in = {"gateway": 0, "peer": 0, "other": 0}
        self.bytes_out = {"gateway": 0, "peer": 0, "other": 0}
        self.active = {"gateway": 0, "peer": 0, "other": 0}
        self.connections = 0

    def begin(self, opcode: int) -> None:
        """A request was handed to a task of its own (not served inline)."""
        self.active[self._role.get(opcode, "other")] += 1

    def end(self, opcode: int) -> None:
        self.active[self._role.get(opcode, "other")] -= 1

    def record(self, opcode: int, result: int, seconds: float, n_in: int, n_out: int) -> None:
        """One request answered: its result, how long it took from its
        header to its answer, its payload bytes each way."""
        key = (opcode, result)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        role = self._role.get(opcode, "other")
        self.bytes_in[role] += n_in
        self.bytes_out[role] += n_out
        hist = self._hist_of.get(opcode)
        if hist is not None:
            hist.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
            hist.total += seconds

    def total(self, opcode: int) -> int:
        """Requests of `opcode` answered, whatever their result."""
        return sum(n for (op, _), n in self.counts.items() if op == opcode)

    def sd_stat(self) -> SdStat:
        """These counters as C sheep's struct sd_stat (`dog node stat`).
        Requests served inline are never in flight; a request counts once
        answered (C sheep counts it as it starts)."""
        n = self.total
        return SdStat(
            gway_active_nr=self.active["gateway"], peer_active_nr=self.active["peer"],
            gway_total_nr=sum(n(op) for op in _GATEWAY_OPS),
            peer_total_nr=sum(n(op) for op in _PEER_OPS),
            gway_total_rx=self.bytes_in["gateway"], gway_total_tx=self.bytes_out["gateway"],
            peer_total_rx=self.bytes_in["peer"], peer_total_tx=self.bytes_out["peer"],
            gway_total_remove_nr=n(Op.REMOVE_OBJ) + n(Op.DISCARD_OBJ),
            gway_total_read_nr=n(Op.READ_OBJ),
            gway_total_write_nr=n(Op.WRITE_OBJ) + n(Op.CREATE_AND_WRITE_OBJ),
            gway_total_flush_nr=n(Op.FLUSH_VDI),
            peer_total_remove_nr=n(Op.REMOVE_PEER), peer_total_read_nr=n(Op.READ_PEER),
            peer_total_write_nr=n(Op.WRITE_PEER) + n(Op.CREATE_AND_WRITE_PEER))
