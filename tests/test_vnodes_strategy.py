"""Sheepdog's two vnodes strategies, in the coordinator (no processes).

Auto (sheep without -V, `dog cluster format` without -V): every node's
vnodes follow its share of the space, recomputed at each membership
change and logged so in the epochs. Fixed (sheep -V N, format -V): each
node keeps its N. A joiner of the other strategy is counted in, then
leaves; `dog node vnodes set` announces a node anew, which makes an epoch.
"""

from __future__ import annotations

from test_coordinator import feed, msg, sync_for

from sheepblk.cluster.driver import Joined
from sheepblk.proto import ClusterStatus, NodeId, SdNode
from sheepblk.proto.constants import ClusterFlag
from sheepblk.ring import weight_by_space
from sheepblk.server import membership as mship
from sheepblk.server.coordinator import (
    Broadcast,
    Coordinator,
    FailStop,
    StartRecovery,
    WriteEpoch,
)
from sheepblk.server.messages import ClusterMsg
from sheepblk.server.vdi_table import VdiTable
from sheepblk.store import NodeConfig

CTIME = 0x1234 << 32
GIB = 1 << 30
AUTO = NodeConfig(ctime=CTIME, copies=2, flags=ClusterFlag.AUTO_VNODES)
FIXED = NodeConfig(ctime=CTIME, copies=2)


def node(port: int, space_gib: int, vnodes: int = 128) -> SdNode:
    return SdNode(NodeId("127.0.0.1", port), vnodes, port, space_gib * GIB)


def coord(me: SdNode, *, auto: bool) -> Coordinator:
    return Coordinator(me, NodeConfig(), VdiTable(), epoch=0, epochs={}, auto_vnodes=auto,
                       now=lambda: 42)


def vnodes(nodes: list[SdNode]) -> list[int]:
    return [n.nr_vnodes for n in nodes]


A, B, C = node(7000, 2), node(7001, 4), node(7002, 8)


def test_an_auto_sheep_weighs_members_by_space_even_before_format() -> None:
    """What `dog node list` shows on a fresh cluster of three disk sizes
    (Sheepdog's test 011): 128 times each node's share of the mean."""
    c = coord(A, auto=True)
    feed(c, Joined(1, A, (A, B, C)))
    assert vnodes(c.members) == [55, 110, 219]
    assert c.members == weight_by_space([A, B, C])


def test_a_fixed_sheep_keeps_the_announced_vnodes() -> None:
    a = node(7000, 2, vnodes=100)
    c = coord(a, auto=False)
    feed(c, Joined(1, a, (a, node(7001, 4, vnodes=300))))
    assert vnodes(c.members) == [100, 300]


def test_the_format_chooses_the_strategy_logged_in_the_epoch() -> None:
    c = coord(A, auto=True)
    feed(c, Joined(1, A, (A, B)))
    written = [a for a in c.format(FIXED) if isinstance(a, WriteEpoch)]
    assert vnodes(written[0].nodes) == [128, 128]  # fixed: as announced
    written = [a for a in c.format(AUTO) if isinstance(a, WriteEpoch)]
    assert vnodes(written[0].nodes) == [85, 171]


def formed_pair(first: SdNode, second: SdNode, *,
                auto: bool) -> tuple[Coordinator, Coordinator]:
    """`first` formats a cluster of the strategy asked for and `second`
    joins it (its sync message applied)."""
    a, b = coord(first, auto=auto), coord(second, auto=auto)
    feed(a, Joined(1, first, (first,)))
    list(a.format(AUTO if auto else FIXED))
    joined = Joined(2, second, (first, second))
    feed(a, joined)
    feed(b, joined)
    feed(b, msg(3, first, sync_for(a, second, 2)))
    return a, b


def auto_cluster() -> tuple[Coordinator, Coordinator]:
    return formed_pair(A, B, auto=True)


def test_a_joiner_of_the_other_strategy_is_counted_in_then_leaves() -> None:
    """As C sheep (Sheepdog's test 116): the members make an epoch with
    the joiner, weighted as theirs, and the joiner fails stop once it
    learns the cluster's strategy."""
    a, _ = auto_cluster()
    fixed = node(7003, 4, vnodes=400)
    joined = Joined(4, fixed, (A, B, fixed))
    actions = feed(a, joined)
    epoch = [x for x in actions if isinstance(x, WriteEpoch)][-1]
    assert vnodes(epoch.nodes) == [77, 154, 154]  # 2, 4, 4 GiB: its -V 400 counts not
    joiner = coord(fixed, auto=False)
    feed(joiner, joined)
    got = feed(joiner, msg(5, A, sync_for(a, fixed, 4)))
    assert any(isinstance(x, FailStop) and "vnodes strategy is auto" in x.why for x in got)
    assert joiner.status == ClusterStatus.KILLED


def test_a_joiner_of_the_same_strategy_stays() -> None:
    a, b = auto_cluster()
    assert b.status == ClusterStatus.OK and not b.failed
    assert vnodes(b.members) == vnodes(a.members) == [85, 171]


def test_an_update_makes_an_epoch_and_reaches_later_joiners() -> None:
    """`dog node vnodes set` on a fixed cluster (Sheepdog's test 111)."""
    a0, b0 = node(7000, 2, vnodes=100), node(7001, 4, vnodes=200)
    a, b = formed_pair(a0, b0, auto=False)
    (sent,) = [x for x in b.update_node(b0._replace(nr_vnodes=10)) if isinstance(x, Broadcast)]
    assert sent.msg.kind == mship.UPDATE
    for c in (a, b):
        actions = feed(c, msg(4, b0, sent.msg))
        epoch = [x for x in actions if isinstance(x, WriteEpoch)]
        assert [(e.epoch, vnodes(e.nodes)) for e in epoch] == [(3, [100, 10])]
        assert any(isinstance(x, StartRecovery) for x in actions)
    late0 = node(7002, 1, vnodes=50)
    late = coord(late0, auto=False)
    joined = Joined(5, late0, (a0, b0, late0))
    feed(a, joined)
    feed(late, joined)
    feed(late, msg(6, a0, sync_for(a, late0, 5)))
    assert vnodes(late.members) == [100, 10, 50]


def test_an_update_from_a_stranger_is_ignored() -> None:
    a, _ = auto_cluster()
    stranger = node(7009, 1)
    update = ClusterMsg(mship.UPDATE, 0, str(stranger.nid),
                        extra={"node": mship.node_to_json(stranger)})
    assert feed(a, msg(9, stranger, update)) == []
    assert len(a.members) == 2
