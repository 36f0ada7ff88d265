"""The fold every corosync member applies (sheepblk/cluster/group_state.py),
as pure functions: what an accept carries is the whole state (a joiner
that starts from it folds on exactly as the others), and when a node
stops for a partition."""

from __future__ import annotations

import json

from sheepblk.cluster.cpg import ConfChg
from sheepblk.cluster.driver import Joined, Left, Message
from sheepblk.cluster.group_state import GroupState
from sheepblk.cluster.stream import encode_parts, node_to_json
from sheepblk.proto import NodeId, SdNode


def node(port: int) -> list[object]:
    return node_to_json(SdNode(NodeId("127.0.0.1", port)))


def test_join_accept_leave() -> None:
    st = GroupState()
    st.join("a", (1, 10), node(7000), 1)
    assert st.accept("a", 2) == []  # not the pending attempt
    (ev,) = st.accept("a", 1)
    assert isinstance(ev, Joined) and ev.seq == 0 and st.first() == "a"
    st.join("b", (1, 11), node(7001), 1)
    st.join("b", (1, 11), node(7001), 2)  # asked again: only attempt 2 counts
    assert st.accept("b", 1) == []
    assert [type(e) for e in st.accept("b", 2)] == [Joined]
    assert not st.join("b", (1, 11), node(7001), 3)  # a member already
    # Node 1's process 10 dies: a's Left; a joiner from that process goes too.
    st.join("c", (1, 10), node(7002), 1)
    (left,) = st.confchg(ConfChg(((1, 11),), (((1, 10), "procdown"),), ()))
    assert isinstance(left, Left) and left.node.nid.port == 7000 and "c" not in st.pending
    assert st.first() == "b" and st.addrs == {"b": (1, 11)}


def test_the_snapshot_is_the_whole_state() -> None:
    """A joiner starting from to_json() (through JSON, as an accept carries
    it) folds the same records into the same events as the member."""
    st = GroupState()
    st.join("a", (1, 10), node(7000), 1)
    st.accept("a", 1)
    st.join("b", (2, 20), node(7001), 1)  # pending when the snapshot is taken
    first, rest = encode_parts("a", 5, b"x" * 10, 4)[:2], encode_parts("a", 5, b"x" * 10, 4)[2:]
    for rec in first:  # a split message half-way
        assert st.message(json.loads(rec)) == []
    copy = GroupState.from_json(json.loads(json.dumps(st.to_json())))
    for s in (st, copy):
        out = [e for rec in rest for e in s.message(json.loads(rec))]
        out += s.accept("b", 1)
        out += s.confchg(ConfChg(((2, 20),), (((1, 10), "nodedown"),), ()))
        assert [type(e) for e in out] == [Message, Joined, Left]
        assert isinstance(out[0], Message) and out[0].payload == b"x" * 10
    assert copy.to_json() == st.to_json()


def test_losing_most_members_to_nodedown_is_a_partition() -> None:
    st = GroupState()
    for i in range(3):
        st.join(f"m{i}", (i + 1, 100), node(7000 + i), 1)
        st.accept(f"m{i}", 1)
    one = ConfChg(((1, 100), (2, 100)), (((3, 100), "nodedown"),), ())
    two = ConfChg(((1, 100),), (((2, 100), "nodedown"), ((3, 100), "nodedown")), ())
    killed = ConfChg(((1, 100),), (((2, 100), "procdown"), ((3, 100), "procdown")), ())
    assert not st.lost_majority(one)
    assert st.lost_majority(two)
    assert not st.lost_majority(killed)  # dead sheep, not unreachable hosts
