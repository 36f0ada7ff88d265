"""The join protocol of one in-process Sheep, fed events by hand: a joiner
whose every would-be syncer leaves before syncing it goes on by itself, and
a restarted cluster waits for the claim of every node present.
"""

from __future__ import annotations

from pathlib import Path

import trio

from sheepblk.cluster.driver import ClusterDriver, Event, Joined, Left, Message
from sheepblk.proto import ClusterStatus, NodeId, SdNode
from sheepblk.server.messages import ClusterMsg
from sheepblk.server.node import Options, Sheep
from sheepblk.store import PlainStore


class Recording(ClusterDriver):
    """Delivers nothing by itself; remembers what the node broadcasts."""

    def __init__(self) -> None:
        self.sent: list[ClusterMsg] = []

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def broadcast(self, payload: bytes) -> None:
        self.sent.append(ClusterMsg.decode(payload))


def node(port: int) -> SdNode:
    return SdNode(NodeId("127.0.0.1", port), 128, port, 1 << 30)


def run_sheep(tmp_path: Path, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        driver = Recording()
        sheep = Sheep(Options(store_dir=tmp_path / "store", port=7001),
                      PlainStore(tmp_path / "store"), driver)
        async with trio.open_nursery() as nursery:
            await nursery.start(sheep.run_cluster)
            await body(sheep, driver)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_joiner_whose_syncers_all_leave_goes_on(tmp_path: Path) -> None:
    async def body(sheep: Sheep, driver: Recording) -> None:
        a, me, late = node(7000), sheep.me, node(7002)
        await sheep._on_event(Joined(1, me, (a, me)))
        assert sheep._sync_wait == 1
        await sheep._on_event(Joined(2, late, (a, me, late)))
        await sheep._on_event(Left(3, a, (me, late)))  # a dies before syncing us
        assert sheep._sync_wait is None, "still waiting for a sync nobody can send"
        assert [str(n.nid) for n in sheep.members] == [str(me.nid), str(late.nid)]
        await trio.sleep(0.1)  # let the broadcasts go out
        # We are the syncer now: the later joiner gets our state.
        syncs = [m for m in driver.sent if m.kind == "sync"]
        assert syncs and syncs[-1].extra["to"] == str(late.nid)
        assert syncs[-1].extra["seq"] == 2

    run_sheep(tmp_path, body)


def test_joiner_waits_while_one_member_it_knew_is_left(tmp_path: Path) -> None:
    async def body(sheep: Sheep, driver: Recording) -> None:
        a, b, me = node(7000), node(7003), sheep.me
        await sheep._on_event(Joined(1, me, (a, b, me)))
        await sheep._on_event(Left(2, a, (b, me)))
        assert sheep._sync_wait == 1  # b may still sync us
        await sheep._on_event(Message(3, b, ClusterMsg(
            "sync", 0, str(b.nid), extra={
                "to": str(me.nid), "seq": 1, "config": {}, "status": int(ClusterStatus.WAIT),
                "epoch": 0, "epochs": [], "vdis": [], "pending": {}, "claimed": []}).encode()))
        assert sheep._sync_wait is None

    run_sheep(tmp_path, body)
