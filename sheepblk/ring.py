"""The consistent-hashing ring: which nodes hold an object.

Positions are Sheepdog 1.0's (include/sheep.h `node_to_vnodes`): a node's
first vnode is `sd_hash_next(sd_hash(addr[16] + port_le16))` and each next
vnode hashes the previous position again. An object lives on the first
vnode at or after `sd_hash_oid(oid)` (wrapping), and its other copies on
the following vnodes, skipping zones already used. Using the same recipe
means our placement matches a C sheep's for the same membership.

It lives outside server/ and cluster/ because dog computes placement too
(`dog vdi check`), as Sheepdog shares it through include/ and lib/.

Why a frozen ring per membership: the gateway asks `oid_to_nodes` on every
request, while membership changes only with an epoch. So a ring is built
once per epoch (sorted positions, bisect) and answers from a small cache.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from .proto import SD_DEFAULT_VNODES, SdNode, sd_hash, sd_hash_next, sd_hash_oid
from .proto.node import addr_to_bytes

# Placement answers kept per ring; a 4 MiB object hit again soon is the
# common case (sequential I/O, inode updates), and a ring lives one epoch.
CACHE_SIZE = 65536


def _f32(x: float) -> float:
    """`x` rounded to a C float (IEEE single precision)."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def vnodes_for_space(space: int, avg: int) -> int:
    """Vnodes for a node with `space` bytes when the nodes that have any
    average `avg` bytes (avg > 0).

    Sheepdog's auto-vnodes rule (group.c `recalculate_vnodes`): 128 times
    the node's share of the mean, in C float arithmetic and rounded half
    to even (rintf), so the counts, and with them every placement, are a
    C sheep's to the vnode even where a ratio falls near a half. A node
    with no space (a gateway), or with under 1/256 of the mean, gets none.
    """
    factor = _f32(_f32(float(space)) / _f32(float(avg)))
    return round(_f32(SD_DEFAULT_VNODES * factor))


def weight_by_space(nodes: Iterable[SdNode]) -> list[SdNode]:
    """The same nodes with nr_vnodes set from their space (a cluster
    whose vnodes strategy is auto). The mean is of the nodes that report
    space, in integer bytes as C's; when none does, nothing changes."""
    nodes = list(nodes)
    sized = [n.space for n in nodes if n.space > 0]
    if not sized:
        return nodes
    avg = sum(sized) // len(sized)
    return [n._replace(nr_vnodes=vnodes_for_space(n.space, avg)) for n in nodes]


def node_vnode_positions(node: SdNode) -> list[int]:
    """The ring positions of `node`'s vnodes (Sheepdog's `node_to_vnodes`)."""
    key = addr_to_bytes(node.nid.addr) + struct.pack("<H", node.nid.port)
    hval = sd_hash(key)
    out = []
    for _ in range(node.nr_vnodes):
        hval = sd_hash_next(hval)
        out.append(hval)
    return out


def sorted_nodes(nodes: Iterable[SdNode]) -> tuple[SdNode, ...]:
    """Sheepdog's node order (node_id: address bytes, then port); ties of
    equal positions or straws are broken by it."""
    return tuple(sorted(set(nodes), key=lambda n: (addr_to_bytes(n.nid.addr), n.nid.port)))


class OwnerLookup:
    """The answers of a placement, cached: the gateway asks on every
    request, and one membership (a placement object) lives a whole epoch.
    A subclass says where a hash's copies go (`_place`)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], tuple[SdNode, ...]] = {}

    def _place(self, hval: int, copies: int) -> tuple[SdNode, ...]:
        raise NotImplementedError

    def oid_to_nodes(self, oid: int, copies: int) -> tuple[SdNode, ...]:
        """The nodes holding `oid`'s copies, primary first (see `_place`)."""
        key = (oid, copies)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self._place(sd_hash_oid(oid), copies)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    def oid_to_node(self, oid: int, copy_idx: int = 0) -> SdNode:
        """The node holding copy `copy_idx` of `oid` (0 = primary)."""
        return self.oid_to_nodes(oid, copy_idx + 1)[copy_idx]

    def owners_of_hash(self, hval: int, copies: int) -> tuple[SdNode, ...]:
        """The owners of the object whose `sd_hash_oid` is `hval`, uncached."""
        return self._place(hval, copies)


class Ring(OwnerLookup):
    """An immutable ring over a set of nodes (one epoch's membership).

    Nodes with `nr_vnodes == 0` are gateways: members, never owners.
    """

    def __init__(self, nodes: Iterable[SdNode]) -> None:
        super().__init__()
        self.nodes = sorted_nodes(nodes)
        entries: SortedList = SortedList()
        for idx, node in enumerate(self.nodes):
            for pos in node_vnode_positions(node):
                entries.add((pos, idx))
        self._positions: list[int] = [p for p, _ in entries]
        self._owners: list[int] = [i for _, i in entries]
        self._zones = [n.zone for n in self.nodes]
        self.nr_zones = len({n.zone for n in self.nodes if n.nr_vnodes > 0})
        self.nr_storage_nodes = sum(1 for n in self.nodes if n.nr_vnodes > 0)

    def __len__(self) -> int:
        """Number of vnodes on the ring."""
        return len(self._positions)

    def arcs(self, copies: int) -> Iterator[tuple[int, int, tuple[SdNode, ...]]]:
        """(end, length, owners) for each arc of the ring: every hash in
        (end - length, end] is held by `owners`. For simulations of load
        and movement (bench/bench_ring.py), exact instead of sampled."""
        positions = self._positions
        for i, end in enumerate(positions):
            length = (end - positions[i - 1]) % (1 << 64) if len(positions) > 1 else 1 << 64
            yield end, length, self._place(end, copies)

    def _place(self, hval: int, copies: int) -> tuple[SdNode, ...]:
        """Copies go to distinct zones, walking clockwise (Sheepdog's
        `oid_to_vnodes`). If there are fewer zones than copies, the zones
        run out and the remaining copies go to further distinct nodes along
        the ring (C Sheepdog instead lowers the copy count to the number of
        zones; the first `nr_zones` answers agree with it). At most
        `nr_storage_nodes` nodes are returned; none on an empty ring."""
        positions, owners, zones = self._positions, self._owners, self._zones
        total = len(positions)
        want = min(copies, self.nr_storage_nodes)
        if want <= 0:
            return ()
        start = bisect_left(positions, hval)
        chosen: list[int] = []
        used_zones: set[int] = set()
        # First pass: distinct zones (exactly Sheepdog's walk).
        for step in range(total):
            idx = owners[(start + step) % total]
            if zones[idx] in used_zones:
                continue
            chosen.append(idx)
            used_zones.add(zones[idx])
            if len(chosen) == want or len(used_zones) == self.nr_zones:
                break
        # Second pass, only with fewer zones than copies: distinct nodes.
        if len(chosen) < want:
            taken = set(chosen)
            for step in range(total):
                idx = owners[(start + step) % total]
                if idx in taken:
                    continue
                chosen.append(idx)
                taken.add(idx)
                if len(chosen) == want:
                    break
        return tuple(self.nodes[i] for i in chosen)
