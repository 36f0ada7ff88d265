"""Straw2 placement: every node draws a straw for every object; the longest
straws, in distinct zones, hold its copies.

Why not Sheepdog's ring: with 128 random vnodes a node, the arcs a node
owns differ in length, so the fullest node carries 1.14x the mean load at
10 nodes and 1.27x at 1,000: the first disk fills while the cluster is on
average 80% full. A draw per (object, node) has no arcs: a node's expected
share is exactly its weight's share, and what is left is the count noise of
a finite number of objects (`bench/bench_ring.py` measures both).

Why it moves little: a node's straw for an object does not depend on the
other nodes, so when a node joins, an object changes owners only where the
newcomer's straw beats one of them, and then exactly that one copy moves to
the newcomer (the zone walk below keeps the others). A departure moves just
the departed node's copies. This is Ceph's straw2 (`bucket_straw2_choose`)
over a flat list of nodes, with the draw `ln(u) / weight` that makes shares
follow weights exactly.

Weights: under the auto vnodes strategy, the space each node announces,
unrounded, so a node whose disk grows (`dog cluster reweight`, `dog node md
plug`) takes objects only for itself, where rounded vnode counts would
shift every node a little; under the fixed strategy, the vnode counts
(`sheep -V`, `dog node vnodes set`). A node with no vnodes is a gateway.

The cost is a hash per member for each placement; `Ring`'s cache of answers
per epoch makes that rare on the I/O path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

from .proto import SdNode, sd_hash
from .proto.node import addr_to_bytes
from .ring import OwnerLookup, sorted_nodes

M64 = (1 << 64) - 1
_LN_2_53 = 53 * math.log(2)


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a 64-bit bijection whose outputs for
    neighbouring inputs look independent (one object's straws must not
    line up across nodes whose seeds differ in a few bits)."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def node_seed(node: SdNode) -> int:
    """A node's identity for its straws: its address, as the ring hashes it."""
    return sd_hash(addr_to_bytes(node.nid.addr) + struct.pack("<H", node.nid.port))


def straw(h: int, seed: int, weight: float) -> float:
    """The node's draw for an object (larger wins): ln(u) / weight with u
    uniform in (0, 1], so the winner is each node with probability weight
    over total weight (the minimum of exponential variables)."""
    u = (mix64(h ^ seed) >> 11) + 1
    return (math.log(u) - _LN_2_53) / weight


class Straw2Ring(OwnerLookup):
    """The owners of objects for one epoch's membership, by straw2, with
    `Ring`'s interface (`oid_to_nodes`, `nodes`, `nr_zones`, ...)."""

    def __init__(self, nodes: Iterable[SdNode], by_space: bool = False) -> None:
        super().__init__()
        self.nodes = sorted_nodes(nodes)
        storage = [i for i, n in enumerate(self.nodes) if n.nr_vnodes > 0]
        self._members = storage
        self._seeds = [node_seed(self.nodes[i]) for i in storage]
        self._zones = [self.nodes[i].zone for i in storage]
        weights = [self.nodes[i].nr_vnodes for i in storage]
        if by_space and all(self.nodes[i].space > 0 for i in storage):
            weights = [self.nodes[i].space for i in storage]
        # Equal weights: the raw hash orders the straws as ln(u)/w would.
        self._weights: list[float] | None = (
            None if len(set(weights)) <= 1 else [float(w) for w in weights])
        self.nr_zones = len(set(self._zones))
        self.nr_storage_nodes = len(storage)

    def __len__(self) -> int:
        """Number of nodes that hold data."""
        return self.nr_storage_nodes

    def draws(self, h: int) -> list[float]:
        """Every storage node's straw for the object hash `h`, in member order."""
        if self._weights is None:
            return [float(mix64(h ^ s)) for s in self._seeds]
        return [straw(h, s, w) for s, w in zip(self._seeds, self._weights, strict=True)]

    def _place(self, h: int, copies: int) -> tuple[SdNode, ...]:
        """The longest straw of each zone, zones by their longest straw;
        with fewer zones than copies, then the next longest straws of any
        zone."""
        want = min(copies, self.nr_storage_nodes)
        if want <= 0:
            return ()
        draws = self.draws(h)
        best: dict[int, int] = {}  # zone -> index of its longest straw
        for i, zone in enumerate(self._zones):
            j = best.get(zone)
            if j is None or draws[i] > draws[j]:
                best[zone] = i
        chosen = sorted(best.values(), key=draws.__getitem__, reverse=True)[:want]
        if len(chosen) < want:
            taken = set(chosen)
            rest = sorted((i for i in range(len(draws)) if i not in taken),
                          key=draws.__getitem__, reverse=True)
            chosen += rest[:want - len(chosen)]
        return tuple(self.nodes[self._members[i]] for i in chosen)
