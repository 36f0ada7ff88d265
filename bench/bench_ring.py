"""How evenly the two placements spread data, and how much a join moves.

    .venv/bin/python bench/bench_ring.py [--nodes 10,100,1000,6144] [--sample 100000]

For each cluster size (nodes in 10 zones, 3 copies, equal disks) it prints
the fullest node's load over the mean (the cluster is "full" when that node
is) and the copies a join moves over the ideal 1/(N+1), for Sheepdog's
vnode ring and for straw2 (`dog cluster format --placement=straw2`).

Exact, not sampled, where that is possible:
- the ring: every arc between vnodes is walked once, each arc's length
  charged to its owners; a join compares owners arc by arc over the union
  of both rings' positions;
- straw2 with ideal hashes: zones come out as a weighted random order
  (a zone's longest straw is an exponential race of its nodes' weights),
  so a zone's chance to hold one of the copies is a sum over ordered
  zone tuples, shared within the zone by weight. A join moves only copies
  onto the newcomer (sheepblk/straw2.py says why), so movement is the
  newcomer's share.

Hashes are not ideal, so `--sample` objects (at sizes up to SAMPLE_UP_TO
nodes, as pure Python draws a straw per node) are also placed for real by
both rings; their max/mean includes the count noise of that many objects,
printed beside it as the floor: the max/mean of the same number of copies
thrown uniformly at random.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable

from sheepblk.proto import NodeId, SdNode
from sheepblk.ring import Ring
from sheepblk.straw2 import Straw2Ring

ZONES = 10
SAMPLE_UP_TO = 100
FULL = 1 << 64


def make_nodes(n: int, first: int = 0) -> list[SdNode]:
    return [SdNode(NodeId(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 7000), 128,
                   i % ZONES, 0) for i in range(first, first + n)]


def ring_load(ring: Ring, copies: int) -> dict[NodeId, float]:
    load: Counter[NodeId] = Counter()
    for _, length, owners in ring.arcs(copies):
        for o in owners:
            load[o.nid] += length
    return {nid: v / FULL for nid, v in load.items()}


def ring_moved(before: Ring, after: Ring, copies: int) -> float:
    """Copies that change node on a join, as a fraction of all copies."""
    ends = sorted({e for e, _, _ in before.arcs(1)} | {e for e, _, _ in after.arcs(1)})
    moved = 0
    for i, end in enumerate(ends):
        length = (end - ends[i - 1]) % FULL
        old = {o.nid for o in before.owners_of_hash(end, copies)}
        new = {o.nid for o in after.owners_of_hash(end, copies)}
        moved += length * len(new - old)
    return moved / FULL / copies


def straw2_load(nodes: list[SdNode], copies: int) -> dict[NodeId, float]:
    """Each node's expected copies per object under ideal hashes."""
    zone_weight: Counter[int] = Counter()
    for n in nodes:
        zone_weight[n.zone] += n.nr_vnodes
    total = sum(zone_weight.values())
    in_top: dict[int, float] = dict.fromkeys(zone_weight, 0.0)
    for order in itertools.permutations(zone_weight, min(copies, len(zone_weight))):
        p, left = 1.0, total
        for z in order:
            p *= zone_weight[z] / left
            left -= zone_weight[z]
        for z in order:
            in_top[z] += p
    return {n.nid: in_top[n.zone] * n.nr_vnodes / zone_weight[n.zone] for n in nodes}


def max_over_mean(load: Iterable[float]) -> float:
    values = list(load)
    return max(values) / (sum(values) / len(values))


def sampled(ring: Ring | Straw2Ring, joined: Ring | Straw2Ring, objects: int, copies: int,
            rnd: random.Random) -> tuple[float, float, int]:
    """(max/mean, moved copies over all copies) for `objects` random hashes."""
    count: Counter[NodeId] = Counter()
    moved = 0
    for _ in range(objects):
        h = rnd.getrandbits(64)
        old = ring.owners_of_hash(h, copies)
        new = joined.owners_of_hash(h, copies)
        count.update(o.nid for o in old)
        moved += len({o.nid for o in new} - {o.nid for o in old})
    loads = [count.get(n.nid, 0) for n in ring.nodes]
    return max_over_mean(loads), moved / (objects * copies), len(loads)


def floor(copies: int, nodes: int, rnd: random.Random, runs: int = 5) -> float:
    """max/mean of `copies` thrown uniformly at `nodes` bins (the count noise)."""
    worst = []
    for _ in range(runs):
        bins = Counter(rnd.randrange(nodes) for _ in range(copies))
        worst.append(max(bins.values()) / (copies / nodes))
    return sum(worst) / runs


def exact_table(sizes: list[int], copies: int) -> None:
    print(f"\n{copies} {'copy' if copies == 1 else 'copies'}, exact")
    print(f"{'nodes':>6} {'ring load':>10} {'straw2 load':>12} {'ring moved':>11} "
          f"{'straw2 moved':>13} {'straw2/ring load':>17}")
    for n in sizes:
        t0 = time.monotonic()
        nodes, newcomer = make_nodes(n), make_nodes(1, first=n)
        ring, ring_after = Ring(nodes), Ring(nodes + newcomer)
        r_load = max_over_mean(ring_load(ring, copies).values())
        r_moved = ring_moved(ring, ring_after, copies) * (n + 1)
        s_load = max_over_mean(straw2_load(nodes, copies).values())
        s_moved = straw2_load(nodes + newcomer, copies)[newcomer[0].nid] / copies * (n + 1)
        print(f"{n:>6} {r_load:>9.3f}x {s_load:>11.3f}x {r_moved:>10.2f}x {s_moved:>12.2f}x "
              f"{s_load / r_load:>16.2f}x   ({time.monotonic() - t0:.0f} s)", flush=True)


def sampled_table(sizes: list[int], copies: int, objects: int, rnd: random.Random) -> None:
    print(f"\n{copies} {'copy' if copies == 1 else 'copies'}, {objects} objects placed by each "
          "ring (count noise included)")
    print(f"{'nodes':>6} {'ring load':>10} {'straw2 load':>12} {'floor':>7} "
          f"{'ring moved':>11} {'straw2 moved':>13}")
    for n in sizes:
        nodes, newcomer = make_nodes(n), make_nodes(1, first=n)
        r = sampled(Ring(nodes), Ring(nodes + newcomer), objects, copies, rnd)
        s = sampled(Straw2Ring(nodes), Straw2Ring(nodes + newcomer), objects, copies, rnd)
        fl = floor(objects * copies, n, rnd)
        print(f"{n:>6} {r[0]:>9.3f}x {s[0]:>11.3f}x {fl:>6.3f}x "
              f"{r[1] * (n + 1):>10.2f}x {s[1] * (n + 1):>12.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="10,100,1000,6144",
                    help="cluster sizes, comma-separated")
    ap.add_argument("--copies", default="1,3", help="copy counts, comma-separated")
    ap.add_argument("--sample", type=int, default=100_000,
                    help=f"objects placed for real at up to {SAMPLE_UP_TO} nodes (0: none)")
    args = ap.parse_args()
    rnd = random.Random(7)
    sizes = [int(x) for x in args.nodes.split(",")]
    print(f"{ZONES} zones, equal disks; load = the fullest node over the mean (the cluster is")
    print("full when that node is); moved = copies a join moves over the ideal 1/(N+1) of them")
    for copies in (int(x) for x in args.copies.split(",")):
        exact_table(sizes, copies)
        small = [n for n in sizes if n <= SAMPLE_UP_TO]
        if args.sample and small:
            sampled_table(small, copies, args.sample, rnd)


if __name__ == "__main__":
    main()
