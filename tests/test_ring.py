"""The ring: Sheepdog's positions, zones, and how little moves on a change."""

from __future__ import annotations

import random
import struct

import pytest

from sheepblk.proto import NodeId, SdNode, sd_hash, sd_hash_next, sd_hash_oid
from sheepblk.proto.node import addr_to_bytes
from sheepblk.ring import Ring, node_vnode_positions, vnodes_for_space, weight_by_space

N_OIDS = 20_000


def node(i: int, zone: int | None = None, vnodes: int = 128, space: int = 0) -> SdNode:
    return SdNode(NodeId(f"127.0.0.{i + 1}", 7000 + i), vnodes, i if zone is None else zone, space)


def oids(n: int = N_OIDS) -> list[int]:
    rnd = random.Random(42)
    return [(rnd.getrandbits(24) << 32) | rnd.getrandbits(20) for _ in range(n)]


def test_positions_follow_sheepdog_recipe() -> None:
    n = node(3, vnodes=4)
    h = sd_hash(addr_to_bytes(n.nid.addr) + struct.pack("<H", n.nid.port))
    expect = []
    for _ in range(4):
        h = sd_hash_next(h)
        expect.append(h)
    assert node_vnode_positions(n) == expect


def test_primary_is_first_vnode_at_or_after_hash() -> None:
    nodes = [node(i) for i in range(5)]
    ring = Ring(nodes)
    allpos = sorted((p, n) for n in nodes for p in node_vnode_positions(n))
    for oid in oids(500):
        h = sd_hash_oid(oid)
        after = [n for p, n in allpos if p >= h]
        expect = after[0] if after else allpos[0][1]
        assert ring.oid_to_node(oid) == expect


def test_deterministic_and_order_independent() -> None:
    nodes = [node(i) for i in range(6)]
    a, b = Ring(nodes), Ring(list(reversed(nodes)))
    for oid in oids(2000):
        assert a.oid_to_nodes(oid, 3) == b.oid_to_nodes(oid, 3)
        assert a.oid_to_nodes(oid, 3) == a.oid_to_nodes(oid, 3)  # cached path


def test_distinct_zones() -> None:
    # 8 nodes in 4 zones: 3 copies must land in 3 different zones.
    nodes = [node(i, zone=i % 4) for i in range(8)]
    ring = Ring(nodes)
    assert ring.nr_zones == 4
    for oid in oids(3000):
        got = ring.oid_to_nodes(oid, 3)
        assert len(got) == 3
        assert len({n.zone for n in got}) == 3


def test_fewer_zones_than_copies_falls_back_to_distinct_nodes() -> None:
    nodes = [node(i, zone=i % 2) for i in range(5)]
    ring = Ring(nodes)
    for oid in oids(2000):
        got = ring.oid_to_nodes(oid, 3)
        assert len(set(got)) == 3
        assert got[0].zone != got[1].zone  # zones first, as far as they go
    # Never more copies than storage nodes; nothing on an empty ring.
    assert len(ring.oid_to_nodes(1, 10)) == 5
    assert Ring([]).oid_to_nodes(1, 3) == ()


def test_gateway_nodes_own_nothing() -> None:
    nodes = [node(i) for i in range(3)] + [node(9, vnodes=0)]
    ring = Ring(nodes)
    assert ring.nr_storage_nodes == 3
    for oid in oids(2000):
        assert node(9, vnodes=0) not in ring.oid_to_nodes(oid, 3)


def _moved(before: Ring, after: Ring, copies: int = 1) -> int:
    return sum(before.oid_to_nodes(o, copies) != after.oid_to_nodes(o, copies) for o in oids())


@pytest.mark.parametrize("n", [3, 5, 8])
def test_join_moves_about_one_over_n_plus_one(n: int) -> None:
    old = Ring([node(i) for i in range(n)])
    new = Ring([node(i) for i in range(n + 1)])
    moved = _moved(old, new)
    expect = N_OIDS / (n + 1)
    assert 0.5 * expect <= moved <= 1.6 * expect, (moved, expect)
    # Every moved primary moved to the new node.
    for o in oids(3000):
        if old.oid_to_node(o) != new.oid_to_node(o):
            assert new.oid_to_node(o) == node(n)


@pytest.mark.parametrize("n", [4, 6, 9])
def test_leave_moves_about_one_over_n(n: int) -> None:
    old = Ring([node(i) for i in range(n)])
    gone = node(n // 2)
    new = Ring([x for x in old.nodes if x != gone])
    moved = _moved(old, new)
    expect = N_OIDS / n
    assert 0.5 * expect <= moved <= 1.6 * expect, (moved, expect)
    assert moved < N_OIDS
    for o in oids(3000):
        if old.oid_to_node(o) != new.oid_to_node(o):
            assert old.oid_to_node(o) == gone


def test_weight_proportional_to_vnodes() -> None:
    spaces = [100, 100, 200, 400]
    nodes = weight_by_space(node(i, space=s) for i, s in enumerate(spaces))
    assert [n.nr_vnodes for n in nodes] == [64, 64, 128, 256]
    ring = Ring(nodes)
    counts = {n: 0 for n in nodes}
    for o in oids():
        counts[ring.oid_to_node(o)] += 1
    total = sum(spaces)
    for n, s in zip(nodes, spaces, strict=True):
        share = counts[n] / N_OIDS
        assert 0.6 * s / total <= share <= 1.4 * s / total, (n, share)


def test_vnodes_for_space() -> None:
    assert vnodes_for_space(0, 10) == 0  # gateway
    assert vnodes_for_space(10, 10) == 128
    assert vnodes_for_space(1, 10**9) == 0  # under 1/256 of the mean: none, as C
    assert weight_by_space([node(0, space=0), node(1, space=0)]) == [
        node(0, space=0), node(1, space=0)]  # nobody reports space: unchanged


def test_auto_vnodes_match_c_sheep_for_measured_disks() -> None:
    """Free bytes of ext4 file systems of 1..6 GiB (Sheepdog's test 054
    makes them) give the counts C sheep shows for them: the weights
    follow the free space, not the nominal sizes (1 GiB of a 3 GiB mean
    would be 43)."""
    free = [983764992, 1983303680, 2983370752, 2983370752, 3979235328, 4978249728]
    nodes = weight_by_space(node(i, space=s) for i, s in enumerate(free))
    assert [n.nr_vnodes for n in nodes] == [42, 85, 128, 128, 171, 214]
    nodes = weight_by_space(node(i, space=s) for i, s in enumerate(free + [5977268224]))
    assert [n.nr_vnodes for n in nodes] == [37, 74, 112, 112, 149, 187, 224]


def test_cached_lookups_answer_as_a_fresh_ring() -> None:
    """The per-ring answer cache (what keeps lookups cheap on the hot path)
    never changes an answer: cold, warm and after the cache is cleared
    when full, lookups agree with a ring that never saw them. (No timing
    threshold: speed is for bench/, not for a test.)"""
    import sheepblk.ring as ring_mod

    nodes = [node(i, zone=i % 3) for i in range(16)]
    ring = Ring(nodes)
    keys = oids()
    cold = [ring.oid_to_nodes(o, 3) for o in keys]
    warm = [ring.oid_to_nodes(o, 3) for o in keys]
    assert cold == warm
    for o, placed in zip(keys[:200], cold, strict=False):
        assert Ring(nodes).oid_to_nodes(o, 3) == placed
        assert len({n.zone for n in placed}) == 3
    small = Ring(nodes)
    old_size = ring_mod.CACHE_SIZE
    ring_mod.CACHE_SIZE = 7  # force clears while looking up
    try:
        assert [small.oid_to_nodes(o, 3) for o in keys] == cold
    finally:
        ring_mod.CACHE_SIZE = old_size
