"""Straw2 placement (sheepblk/straw2.py): zones, gateways, weights, and
that a change of membership moves only the copies it must.

The objects are a fixed pseudo-random set, so the counts below are the
same on every run; the bounds are statistical facts for that many draws,
not timings.
"""

from __future__ import annotations

import random
from collections import Counter

from test_ring import node, oids

from sheepblk.placement import placement_name, ring_for
from sheepblk.proto import ClusterFlag, sd_hash_oid
from sheepblk.ring import Ring
from sheepblk.straw2 import Straw2Ring

N_OIDS = 6000


def test_deterministic_and_order_independent() -> None:
    nodes = [node(i) for i in range(8)]
    a, b = Straw2Ring(nodes), Straw2Ring(list(reversed(nodes)))
    for oid in oids(300):
        assert a.oid_to_nodes(oid, 3) == b.oid_to_nodes(oid, 3)
        assert a.oid_to_nodes(oid, 3) == a.owners_of_hash(sd_hash_oid(oid), 3)


def test_copies_go_to_distinct_zones_then_distinct_nodes() -> None:
    nodes = [node(i, zone=i % 3) for i in range(9)]
    ring = Straw2Ring(nodes)
    for oid in oids(500):
        three = ring.oid_to_nodes(oid, 3)
        assert len({n.zone for n in three}) == 3
        five = ring.oid_to_nodes(oid, 5)
        assert five[:3] == three  # zones first, each zone's longest straw
        assert len({n.nid for n in five}) == 5
    assert ring.nr_zones == 3


def test_gateways_hold_nothing() -> None:
    nodes = [node(i) for i in range(4)] + [node(9, vnodes=0)]
    ring = Straw2Ring(nodes)
    assert ring.nr_storage_nodes == 4
    for oid in oids(300):
        assert all(n.nr_vnodes for n in ring.oid_to_nodes(oid, 4))


def test_a_join_moves_copies_only_onto_the_newcomer() -> None:
    nodes = [node(i) for i in range(20)]
    newcomer = node(20)
    before, after = Straw2Ring(nodes), Straw2Ring(nodes + [newcomer])
    moved = 0
    for oid in oids(N_OIDS):
        old = set(before.oid_to_nodes(oid, 3))
        new = set(after.oid_to_nodes(oid, 3))
        assert new - old <= {newcomer}
        assert len(old - new) == len(new - old)
        moved += len(new - old)
    ideal = N_OIDS * 3 / 21
    assert 0.85 * ideal < moved < 1.15 * ideal  # 15% is over four standard deviations


def test_a_leave_moves_only_the_departed_nodes_copies() -> None:
    nodes = [node(i) for i in range(12)]
    gone = nodes[5]
    before, after = Straw2Ring(nodes), Straw2Ring(nodes[:5] + nodes[6:])
    for oid in oids(N_OIDS):
        old = before.oid_to_nodes(oid, 3)
        new = after.oid_to_nodes(oid, 3)
        kept = set(old) - {gone}
        assert kept <= set(new)
        assert len(set(new) - set(old)) == (gone in old)


def test_shares_follow_weights() -> None:
    """A node with twice the vnodes (auto vnodes: twice the space) gets
    about twice the objects."""
    nodes = [node(i, vnodes=256 if i < 2 else 128) for i in range(8)]
    ring = Straw2Ring(nodes)
    count = Counter(ring.oid_to_node(oid).nid.port for oid in oids(N_OIDS))
    heavy = sum(count[n.nid.port] for n in nodes[:2]) / 2
    light = sum(count[n.nid.port] for n in nodes[2:]) / 6
    assert 1.8 < heavy / light < 2.2


def test_even_load_where_the_ring_is_not() -> None:
    nodes = [node(i) for i in range(50)]
    rnd = random.Random(3)
    hashes = [rnd.getrandbits(64) for _ in range(N_OIDS * 5)]
    straw, ring = Straw2Ring(nodes), Ring(nodes)

    def fullest(r: Ring | Straw2Ring) -> float:
        c = Counter(r.owners_of_hash(h, 1)[0].nid.port for h in hashes)
        return max(c.values()) / (len(hashes) / len(nodes))

    # 600 objects a node: count noise alone makes the fullest about 1.1x.
    assert fullest(straw) < 1.2 < fullest(ring)


def test_cached_answers_are_fresh_answers() -> None:
    ring = Straw2Ring([node(i) for i in range(6)])
    for oid in oids(200):
        first = ring.oid_to_nodes(oid, 2)
        assert ring.oid_to_nodes(oid, 2) == first == ring.owners_of_hash(sd_hash_oid(oid), 2)


def test_the_cluster_flag_picks_the_placement() -> None:
    nodes = [node(i) for i in range(3)]
    assert isinstance(ring_for(nodes, 0), Ring)
    assert isinstance(ring_for(nodes, int(ClusterFlag.STRAW2 | ClusterFlag.AUTO_VNODES)),
                      Straw2Ring)
    assert placement_name(int(ClusterFlag.STRAW2)) == "straw2"
    assert placement_name(int(ClusterFlag.AUTO_VNODES)) == "sheepdog"


def test_a_grown_disk_moves_objects_only_onto_its_node() -> None:
    """Under auto vnodes the weight is the announced space itself: after a
    reweight for one bigger disk, every copy that moves goes to that node
    (rounded vnode counts would have nudged every node's weight)."""
    gib = 1 << 30
    nodes = [node(i, space=(100 + 7 * i) * gib) for i in range(10)]
    grown = nodes[4]._replace(space=250 * gib)
    before = Straw2Ring(nodes, by_space=True)
    after = Straw2Ring([*nodes[:4], grown, *nodes[5:]], by_space=True)
    moved = 0
    for oid in oids(N_OIDS):
        old = {n.nid for n in before.oid_to_nodes(oid, 3)}
        new = {n.nid for n in after.oid_to_nodes(oid, 3)}
        assert new - old <= {grown.nid}
        moved += len(new - old)
    assert moved > 0


def test_by_space_shares_follow_space() -> None:
    gib = 1 << 30
    nodes = [node(i, space=(300 if i < 3 else 100) * gib) for i in range(9)]
    ring = Straw2Ring(nodes, by_space=True)
    count = Counter(ring.oid_to_node(oid).nid.port for oid in oids(N_OIDS))
    big = sum(count[n.nid.port] for n in nodes[:3]) / 3
    small = sum(count[n.nid.port] for n in nodes[3:]) / 6
    assert 2.6 < big / small < 3.4
