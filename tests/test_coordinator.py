"""The coordinator (server/coordinator.py) without processes or sockets:
events made by hand go in, the actions it yields come out.

Join races, a node leaving mid-block, a rejoin with queued blocks, a
restart that waits for its nodes, and the rule behind it all: two nodes
fed the same stream reach the same state.
"""

from __future__ import annotations

from sheepblk.cluster.driver import Event, Joined, Left, Message
from sheepblk.proto import ClusterStatus, NodeId, Res, SdNode
from sheepblk.server import membership as mship
from sheepblk.server.coordinator import (
    Action,
    Answer,
    ApplyMain,
    Broadcast,
    ClearEpochs,
    Coordinator,
    EmptyStore,
    FailStop,
    MoveAllToStale,
    PurgeStale,
    SaveConfig,
    StartRecovery,
    StartWork,
    Stop,
    WriteEpoch,
)
from sheepblk.server.messages import ClusterMsg
from sheepblk.server.vdi_table import VdiTable
from sheepblk.store import NodeConfig

CTIME = 0x1234 << 32


def node(port: int) -> SdNode:
    return SdNode(NodeId("127.0.0.1", port), 128, port, 1 << 30)


A, B, C = node(7000), node(7001), node(7002)


def coord(me: SdNode, *, formatted: bool = False, epoch: int = 0,
          epochs: dict[int, list[SdNode]] | None = None, unclean: bool = False,
          shut_down: bool = False) -> Coordinator:
    cfg = NodeConfig(ctime=CTIME, copies=3, shutdown=shut_down) if formatted else NodeConfig()
    logs = {ep: (nodes, 1000 + ep) for ep, nodes in (epochs or {}).items()}
    return Coordinator(me, cfg, VdiTable(), epoch=epoch, epochs=logs, unclean=unclean,
                       now=lambda: 42)


def feed(c: Coordinator, *events: Event) -> list[Action]:
    out: list[Action] = []
    for ev in events:
        out += list(c.receive(ev))
    return out


def msg(seq: int, sender: SdNode, m: ClusterMsg) -> Message:
    return Message(seq, sender, m.encode())


def block(origin: SdNode, op_id: int) -> ClusterMsg:
    return ClusterMsg("block", op_id, str(origin.nid))


def notify(origin: SdNode, op_id: int, *, blocked: bool = False) -> ClusterMsg:
    return ClusterMsg("notify", op_id, str(origin.nid), blocked=blocked)


def sync_for(c: Coordinator, to: SdNode, seq: int) -> ClusterMsg:
    """What `c` broadcasts for a joiner (as its syncer would)."""
    return c._send_sync(str(to.nid), seq).msg


def running(*members: SdNode) -> list[Coordinator]:
    """A formatted cluster of `members`, running at epoch 1, each node's
    coordinator having applied the same stream."""
    first = coord(members[0], formatted=False)
    feed(first, Joined(1, members[0], (members[0],)))
    list(first.format(NodeConfig(ctime=CTIME, copies=3)))
    nodes = [first]
    seq = 2
    for k, m in enumerate(members[1:], start=1):
        joined = Joined(seq, m, tuple(members[:k + 1]))
        for c in nodes:
            feed(c, joined)
        new = coord(m)
        feed(new, joined)
        feed(new, msg(seq + 1, members[0], sync_for(nodes[0], m, seq)))
        nodes.append(new)
        seq += 2
    return nodes


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# ---- joining ----

def test_an_unformatted_first_node_waits_for_format() -> None:
    c = coord(A)
    assert feed(c, Joined(1, A, (A,))) == []
    assert c.status == ClusterStatus.WAIT and c.members == [A]
    actions = list(c.format(NodeConfig(ctime=CTIME, copies=1)))
    assert kinds(actions) == ["SaveConfig", "ClearEpochs", "StopRecovery", "EpochMoved",
                              "WriteEpoch", "EpochMoved"]
    assert actions[4] == WriteEpoch(1, [A], 42)
    assert c.status == ClusterStatus.OK and c.epoch == 1


def test_a_restarted_lone_node_runs_when_its_last_epoch_had_only_it() -> None:
    c = coord(A, formatted=True, epoch=3, epochs={3: [A]}, shut_down=True)
    assert feed(c, Joined(1, A, (A,))) == []
    assert c.status == ClusterStatus.OK and c.epoch == 3


def test_a_cluster_back_from_a_kill_recovers_at_the_same_ring() -> None:
    """Not `dog cluster shutdown`: as Sheepdog, each node recovers what it
    owns but lacks (Sheepdog's test 072: objects left only in .stale/)."""
    c = coord(A, formatted=True, epoch=3, epochs={3: [A]})
    assert feed(c, Joined(1, A, (A,))) == [StartRecovery(3, same_ring=True)]
    assert c.status == ClusterStatus.OK and c.epoch == 3


def test_after_an_unclean_stop_the_copies_are_compared() -> None:
    c = coord(A, formatted=True, epoch=3, epochs={3: [A]}, unclean=True)
    assert feed(c, Joined(1, A, (A,))) == [StartRecovery(3, reconcile=True, same_ring=True)]


def test_a_restarted_cluster_waits_for_the_claim_of_every_node_present() -> None:
    a = coord(A, formatted=True, epoch=2, epochs={2: [A, B]})
    out = feed(a, Joined(1, A, (A,)))
    assert a.status == ClusterStatus.WAIT
    assert [x.msg.kind for x in out if isinstance(x, Broadcast)] == [mship.CLAIM]
    b = coord(B, formatted=True, epoch=2, epochs={2: [A, B]})
    joined = Joined(2, B, (A, B))
    assert kinds(feed(a, joined)) == ["Broadcast"]  # the sync for B
    out = feed(b, joined, msg(3, A, sync_for(a, B, 2)))
    assert b.status == ClusterStatus.WAIT and a.status == ClusterStatus.WAIT
    # B's claim, broadcast once it had the cluster's state, reaches both.
    (claim,) = [x.msg for x in out if isinstance(x, Broadcast)]
    assert claim.kind == mship.CLAIM and claim.extra["epoch"] == 2
    for c in (a, b):
        # killed, not shut down: each recovers at the same ring
        assert feed(c, msg(4, B, claim)) == [StartRecovery(2, same_ring=True)]
        assert c.status == ClusterStatus.OK and c.epoch == 2


def test_joiner_whose_syncers_all_leave_goes_on() -> None:
    me, late = B, C
    c = coord(me)
    feed(c, Joined(1, me, (A, me)))
    assert c._join.sync_wait == 1
    feed(c, Joined(2, late, (A, me, late)))
    out = feed(c, Left(3, A, (me, late)))  # A dies before syncing us
    assert c._join.sync_wait is None, "still waiting for a sync nobody can send"
    assert c.members == [me, late]
    # We are the syncer now: the later joiner gets our state.
    syncs = [a.msg for a in out if isinstance(a, Broadcast) and a.msg.kind == mship.SYNC]
    assert syncs and syncs[-1].extra["to"] == str(late.nid) and syncs[-1].extra["seq"] == 2


def test_joiner_waits_while_one_member_it_knew_is_left() -> None:
    c = coord(C)
    feed(c, Joined(1, C, (A, B, C)), Left(2, A, (B, C)))
    assert c._join.sync_wait == 1  # B may still sync us
    feed(c, msg(3, B, ClusterMsg("sync", 0, str(B.nid), extra={
        "to": str(C.nid), "seq": 1, "config": {}, "status": int(ClusterStatus.WAIT),
        "epoch": 0, "epochs": [], "vdis": [], "pending": {}, "claimed": []})))
    assert c._join.sync_wait is None


def test_a_joiner_takes_the_running_cluster_and_recovers() -> None:
    a, b = running(A, B)
    assert (a.status, b.status) == (ClusterStatus.OK, ClusterStatus.OK)
    assert a.epoch == b.epoch == 2
    assert a.epoch_nodes(2) == b.epoch_nodes(2) == [A, B]
    joined = Joined(5, C, (A, B, C))
    out = feed(a, joined)
    assert kinds(out) == ["WriteEpoch", "EpochMoved", "Broadcast", "StartRecovery"]
    c = coord(C)
    feed(c, joined)
    out = feed(c, msg(6, A, sync_for(a, C, 5)))
    assert kinds(out) == ["EmptyStore", "ClearEpochs", "SaveConfig", "WriteEpoch",
                          "WriteEpoch", "WriteEpoch", "EpochMoved", "StartRecovery"]
    assert c.epoch == 3 and c.status == ClusterStatus.OK and c.config.ctime == CTIME


def test_a_node_of_another_cluster_refuses_to_join() -> None:
    (a,) = running(A)
    stranger = coord(B, formatted=True, epoch=1, epochs={1: [B]})
    stranger.config.ctime = CTIME + 1
    joined = Joined(3, B, (A, B))
    feed(a, joined)
    out = feed(stranger, joined, msg(4, A, sync_for(a, B, 3)))
    assert [type(x) for x in out] == [Broadcast, FailStop]
    last_word = out[0]
    assert isinstance(last_word, Broadcast) and last_word.msg.kind == mship.FAILED
    assert "another cluster" in last_word.msg.extra["why"]
    assert stranger.status == ClusterStatus.KILLED and "another cluster" in stranger.failed


def test_a_rejoin_after_a_session_loss_moves_our_copies_to_stale() -> None:
    a, b = running(A, B)
    left = Left(5, B, (A,))
    feed(a, left)  # B's session expired: A goes on without it
    joined = Joined(6, B, (A, B))
    feed(a, joined)
    out = feed(b, joined)  # B sees its own Joined again
    assert out == [] and b.status == ClusterStatus.WAIT
    out = feed(b, msg(7, A, sync_for(a, B, 6)))
    assert MoveAllToStale(2) in out and b.epoch == a.epoch == 4
    assert out[-1] == StartRecovery(4)



def test_a_node_expelled_while_cut_off_applies_nothing_until_it_joins_again() -> None:
    """Its ZooKeeper session ended while it was cut off, and the others
    went on without it: what it reads when it is back holds its own Left,
    their epoch without it and their recovery of that epoch. None of it is
    its to apply. It would recover for a ring it is no member of, and the
    others' "every member recovered" would have it delete every object it
    holds as no longer its own: the last copies, maybe, of objects the
    others never saw because they could not reach it (a split off
    majority of the hosts lost them all so, tests/test_multihost.py)."""
    a, b, c = running(A, B, C)
    recovered = [msg(11 + i, n, ClusterMsg(mship.RECOVERED, 0, str(n.nid),
                                           extra={"epoch": 4, "ok": True}))
                 for i, n in enumerate((A, B))]
    events: list[Event] = [Left(10, C, (A, B)), *recovered]
    assert PurgeStale(4, True) in feed(a, *events)
    feed(b, *events)
    out = feed(c, *events)
    assert not [x for x in out if isinstance(x, PurgeStale | StartRecovery | WriteEpoch)], out
    assert c.status == ClusterStatus.WAIT and c.epoch == 3  # its last epoch as a member
    joined = Joined(13, C, (A, B, C))
    feed(a, joined)
    assert feed(c, joined) == [] and c._join.sync_wait == 13
    out = feed(c, msg(14, A, sync_for(a, C, 13)))
    # Its copies are set aside as of the last epoch it was a member of.
    assert MoveAllToStale(3) in out and c.epoch == a.epoch == 5
    assert out[-1] == StartRecovery(5) and c.status == ClusterStatus.OK


# ---- the ordered stream ----

def test_a_block_holds_the_stream_until_its_notify() -> None:
    a, b = running(A, B)
    events: list[Event] = [msg(10, A, block(A, 1)), msg(11, B, notify(B, 1))]
    out_a, out_b = feed(a, *events), feed(b, *events)
    assert out_a == [StartWork(block(A, 1))]  # only the asking node works
    assert out_b == []  # B's notify waits behind A's block, everywhere
    done = msg(12, A, notify(A, 1, blocked=True))
    out_a, out_b = feed(a, done), feed(b, done)
    assert kinds(out_a) == kinds(out_b) == ["ApplyMain", "ApplyMain"]
    assert [x.msg.origin for x in out_a if isinstance(x, ApplyMain)] == [str(A.nid), str(B.nid)]
    assert a.stream_idle() and b.stream_idle()


def test_a_node_leaving_mid_block_releases_the_stream() -> None:
    a, b = running(A, B)
    feed(a, msg(10, B, block(B, 7)), msg(11, A, notify(A, 3)))
    assert not a.stream_idle()
    out = feed(a, Left(12, B, (A,)))
    # The dead node's block is dropped; what waited behind it goes on.
    assert kinds(out) == ["ApplyMain", "WriteEpoch", "EpochMoved", "StartRecovery"]
    assert a.stream_idle() and a.members == [A]


def test_a_block_from_a_node_already_gone_is_skipped() -> None:
    a, b = running(A, B)
    feed(a, Left(10, B, (A,)))
    assert feed(a, msg(11, B, block(B, 1)), msg(12, A, notify(A, 2))) == [
        ApplyMain(notify(A, 2))]


def test_a_rejoin_drops_the_blocks_queued_before_it() -> None:
    a, b = running(A, B)
    feed(b, msg(10, A, block(A, 1)))
    assert not b.stream_idle()
    out = feed(b, Joined(11, B, (A, B)))  # our own Joined again
    assert out == [] and b.stream_idle() and b._join.sync_wait == 11
    # Parked until the sync: then the notify of that block still applies
    # (main halves are idempotent), once.
    out = feed(b, msg(12, A, notify(A, 1, blocked=True)))
    assert out == []
    out = feed(b, msg(13, A, sync_for(a, B, 11)))
    assert [x for x in out if isinstance(x, ApplyMain)] == [
        ApplyMain(notify(A, 1, blocked=True))]


def test_force_recover_answers_its_sender() -> None:
    a = coord(A, formatted=True, epoch=2, epochs={2: [A, B]})
    feed(a, Joined(1, A, (A,)))
    assert a.status == ClusterStatus.WAIT
    out = feed(a, msg(2, A, ClusterMsg(mship.FORCE, 9, str(A.nid))))
    assert out[-1] == Answer(9, Res.SUCCESS) and StartRecovery(3) in out
    assert a.status == ClusterStatus.OK and a.epoch == 3
    out = feed(a, msg(3, A, ClusterMsg(mship.FORCE, 10, str(A.nid))))
    assert out == [Answer(10, Res.FORCE_RECOVER)]


def test_stale_copies_go_once_every_member_recovered() -> None:
    a, b = running(A, B)
    assert [x.msg.kind for x in a.recovered(2, True) if isinstance(x, Broadcast)] == [
        mship.RECOVERED]
    assert list(a.recovered(1, True)) == []  # an older epoch's: nothing to say
    done_a = ClusterMsg(mship.RECOVERED, 0, str(A.nid), extra={"epoch": 2, "ok": True})
    done_b = ClusterMsg(mship.RECOVERED, 0, str(B.nid), extra={"epoch": 2, "ok": False})
    assert feed(a, msg(10, A, done_a)) == []
    assert feed(a, msg(11, B, done_b)) == [PurgeStale(2, False)]


def test_every_node_keeps_why_a_node_failed_stop() -> None:
    a, b = running(A, B)
    (last_word, _) = list(b.fail_stop("cannot apply NEW_VDI as the cluster did"))
    assert isinstance(last_word, Broadcast)
    events: list[Event] = [msg(10, B, last_word.msg), Left(11, B, (A,))]
    feed(a, *events)
    assert a.departed == {str(B.nid): "cannot apply NEW_VDI as the cluster did"}
    assert a.members == [A]


def test_undecodable_messages_are_dropped() -> None:
    a, _ = running(A, B)
    assert feed(a, Message(10, B, b"junk")) == []
    assert a.stream_idle()


def test_shutdown_and_kill() -> None:
    (a,) = running(A)
    out = list(a.shut_down())
    assert kinds(out) == ["StopRecovery", "SaveConfig", "Stop"]
    assert a.status == ClusterStatus.SHUTDOWN and a.config.shutdown
    b = coord(B)
    assert list(b.kill()) == [Stop()] and b.status == ClusterStatus.KILLED
    assert kinds(list(b.fail_stop("x"))) == ["Broadcast", "FailStop"]
    assert list(b.fail_stop("again")) == [] and b.failed == "x"


def test_every_node_folds_the_same_stream_to_the_same_state() -> None:
    nodes = running(A, B, C)
    stream: list[Event] = [
        msg(20, A, block(A, 1)), msg(21, C, notify(C, 1)),
        msg(22, A, notify(A, 1, blocked=True)),
        Left(23, B, (A, C)),
        msg(24, C, block(C, 2)),
        Joined(25, B, (A, C, B)),
        msg(26, C, notify(C, 2, blocked=True)),
    ]
    applied = []
    for c in nodes[:1] + nodes[2:]:  # B left: A and C go on
        out = feed(c, *stream)
        applied.append([x.msg for x in out if isinstance(x, ApplyMain)])
        assert not any(isinstance(x, (FailStop, EmptyStore, ClearEpochs, SaveConfig))
                       for x in out)
    assert applied[0] == applied[1] and len(applied[0]) == 3
    a, c = nodes[0], nodes[2]
    assert (a.epoch, a.members, a.status) == (c.epoch, c.members, c.status)
    assert a.epoch_nodes(a.epoch) == c.epoch_nodes(c.epoch) == [A, B, C]
    assert a.epoch == 5  # 3 nodes at 3, B left (4), came back (5)
