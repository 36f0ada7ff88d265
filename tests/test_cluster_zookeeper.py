"""The ZooKeeper driver against a real ZooKeeper server (Debian's jars)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from cluster_harness import Member, check_same_order, start, wait_until
from kazoo.client import KazooClient
from zk import ZooKeeperServer, missing

from sheepblk.cluster.driver import DriverError, Event, Joined, Left, Message
from sheepblk.cluster.zookeeper import ZooKeeperDriver, parse_spec
from sheepblk.proto import NodeId, SdNode

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no ZooKeeper: {missing()}")

SESSION = 4  # seconds; the server's tickTime allows 1..10


@pytest.fixture(scope="module")
def zk(zk_server: ZooKeeperServer) -> ZooKeeperServer:
    """conftest's module ZooKeeper server, under this file's short name."""
    return zk_server


def spec(zk: ZooKeeperServer, cluster: str) -> str:
    return f"zookeeper:{zk.hosts},timeout={SESSION},cluster={cluster}"


def test_parse_spec() -> None:
    assert parse_spec("a:1,b:2") == ("a:1,b:2", 10.0, "/sheepdog")
    assert parse_spec("a:1,timeout=5,cluster=x") == ("a:1", 5.0, "/sheepdog-x")
    with pytest.raises(ValueError):
        parse_spec("timeout=5")
    with pytest.raises(ValueError):
        parse_spec("a:1,color=red")


def test_clean_leave_is_immediate(zk: ZooKeeperServer, spawn: list[Member]) -> None:
    s = spec(zk, "leave")
    ms = [start(spawn, s, 8300 + i) for i in range(2)]
    wait_until(lambda: all(len(m.members()) == 2 for m in ms), "2 members", members=ms)
    ms[1].stop()
    assert ms[1].proc.returncode == 0, ms[1]
    wait_until(lambda: bool(ms[0].lefts(8301)), "Left after SIGTERM", timeout=SESSION - 1,
               members=ms[:1])
    time.sleep(1.0)
    assert len(ms[0].lefts(8301)) == 1


def test_restart_after_everyone_died(zk: ZooKeeperServer, spawn: list[Member]) -> None:
    s = spec(zk, "restart")
    old = [start(spawn, s, 8500 + i) for i in range(3)]
    wait_until(lambda: all(len(m.members()) == 3 for m in old), "3 members", members=old)
    for m in old:
        m.kill9()
    # Back at once, before the old sessions expire: 8500 replaces its old
    # incarnation, the other two leave when their sessions end.
    new = [start(spawn, s, port, msgs=3, wait_members=2) for port in (8500, 8503)]
    wait_until(lambda: all(sorted(m.members()) == [8500, 8503] for m in new),
               "only the new members left", timeout=SESSION * 2 + 15, members=new)
    # 8500 may talk before 8503 joins; 8503 sees what follows its join.
    # Either may join first (8500 replaces its old incarnation, 8503 is new).
    def talked() -> bool:
        early, late = sorted(new, key=lambda m: int(m.events[0]["seq"]))
        late_start = late.events[0]["seq"]
        late_part = [e for e in early.events if e["ev"] == "msg" and e["seq"] >= late_start]
        return len(early.messages()) == 6 and len(late.messages()) == len(late_part)

    wait_until(talked, "restarted cluster talks", members=new)
    time.sleep(1.0)
    for m in new:
        for port in (8501, 8502):
            assert len(m.lefts(port)) <= 1
    check_same_order(new)


# -- in-process: server restart and session expiry -------------------------


def _node(port: int) -> SdNode:
    return SdNode(NodeId("127.0.0.1", port))


async def _two_members(s: str, body: Callable[[dict[int, ZooKeeperDriver], dict[int, list[Event]]],
                                              Awaitable[None]]) -> dict[int, list[Event]]:
    drivers = {p: ZooKeeperDriver(s.removeprefix("zookeeper:")) for p in (1, 2)}
    seen: dict[int, list[Event]] = {1: [], 2: []}

    async def collect(port: int, recv: trio.MemoryReceiveChannel[Event]) -> None:
        async for ev in recv:
            seen[port].append(ev)

    async with trio.open_nursery() as nursery:
        for p, d in drivers.items():
            send, recv = trio.open_memory_channel[Event](0)
            nursery.start_soon(collect, p, recv)
            await nursery.start(d.run, _node(p), send)
        with trio.fail_after(90):
            await body(drivers, seen)
        nursery.cancel_scope.cancel()
    return seen


async def _wait_for(pred: Callable[[], bool]) -> None:
    # Polling is right here: the predicates read state several tasks change.
    while not pred():  # noqa: ASYNC110
        await trio.sleep(0.05)


def _msgs(evs: list[Event]) -> list[bytes]:
    return [e.payload for e in evs if isinstance(e, Message)]


def _check_consistent(seen: dict[int, list[Event]]) -> None:
    a, b = seen[1], seen[2]
    assert [e for e in a if e.seq >= b[0].seq] == b
    assert [e.seq for e in a] == list(range(a[0].seq, a[0].seq + len(a)))


def test_server_restart_keeps_order(tmp_path: Path) -> None:
    server = ZooKeeperServer(tmp_path / "zk")
    server.start()
    try:
        async def body(d: dict[int, ZooKeeperDriver], seen: dict[int, list[Event]]) -> None:
            for i in range(5):
                await d[1 + i % 2].broadcast(b"before%d" % i)
            await trio.to_thread.run_sync(server.stop)
            await trio.sleep(SESSION + 2)  # long enough for sessions to be in doubt
            await trio.to_thread.run_sync(server.start)
            for i in range(5):
                await d[1 + i % 2].broadcast(b"after%d" % i)
            await _wait_for(lambda: all(len(_msgs(v)) >= 10 for v in seen.values()))
            await _wait_for(lambda: all(len(x.members) == 2 for x in d.values()))

        seen = trio.run(_two_members, f"zookeeper:{server.hosts},timeout={SESSION}", body)
    finally:
        server.stop()
    expect = [b"before%d" % i for i in range(5)] + [b"after%d" % i for i in range(5)]
    for evs in seen.values():
        assert _msgs(evs) == expect  # each exactly once, in order
    _check_consistent(seen)


def test_session_expiry_rejoins(zk: ZooKeeperServer) -> None:
    s = spec(zk, "expire")

    async def body(d: dict[int, ZooKeeperDriver], seen: dict[int, list[Event]]) -> None:
        await d[1].broadcast(b"one")
        client = d[1]._client
        assert client is not None
        # Kill node 1's session from outside: attach to it, then close it.
        thief = KazooClient(zk.hosts, client_id=client.client_id, timeout=SESSION)
        await trio.to_thread.run_sync(thief.start)
        await trio.to_thread.run_sync(thief.stop)
        thief.close()
        await _wait_for(lambda: any(isinstance(e, Left) and e.node == _node(1) for e in seen[2]))
        await _wait_for(lambda: any(isinstance(e, Joined) and e.node == _node(1)
                                    for e in seen[2][1:]))
        await d[1].broadcast(b"two")
        await d[2].broadcast(b"three")
        await _wait_for(lambda: all(len(_msgs(v)) >= 3 for v in seen.values()))

    seen = trio.run(_two_members, s, body)
    for evs in seen.values():
        assert _msgs(evs) == [b"one", b"two", b"three"]
        lefts = [e for e in evs if isinstance(e, Left)]
        assert [e.node for e in lefts] == [_node(1)], [(type(e).__name__, e.seq) for e in evs]
        assert lefts[0].members == (_node(2),)
    rejoin = [e for e in seen[2] if isinstance(e, Joined) and e.node == _node(1)][-1]
    assert set(rejoin.members) == {_node(1), _node(2)}
    _check_consistent(seen)


# -- compaction and split messages ------------------------------------------


async def _start(nursery: trio.Nursery, s: str, port: int, seen: dict[int, list[Event]],
                 compact_at: int) -> ZooKeeperDriver:
    d = ZooKeeperDriver(s.removeprefix("zookeeper:"))
    d.compact_at = compact_at
    seen[port] = []
    send, recv = trio.open_memory_channel[Event](0)

    async def collect() -> None:
        async for ev in recv:
            seen[port].append(ev)

    nursery.start_soon(collect)
    await nursery.start(d.run, _node(port), send)
    return d


def _queue_len(zk: ZooKeeperServer, root: str) -> int:
    client = KazooClient(zk.hosts)
    client.start()
    try:
        return len(client.get_children(f"{root}/queue"))
    finally:
        client.stop()
        client.close()


async def _talk(d: ZooKeeperDriver, tag: str, n: int) -> None:
    for i in range(n):
        await d.broadcast(f"{tag}{i}".encode())


def test_compaction_bounds_the_queue_and_a_joiner_starts_from_the_checkpoint(
        zk: ZooKeeperServer) -> None:
    s, root, compact_at = spec(zk, "compact"), "/sheepdog-compact", 200
    lengths: list[int] = []
    checkpoints: list[int] = []  # the checkpoint versions the joiners started from

    async def main() -> dict[int, list[Event]]:
        seen: dict[int, list[Event]] = {}
        async with trio.open_nursery() as nursery:
            d = {p: await _start(nursery, s, p, seen, compact_at) for p in (1, 2)}
            await _wait_for(lambda: all(len(x.members) == 2 for x in d.values()))

            async def sample() -> None:
                while True:
                    lengths.append(await trio.to_thread.run_sync(_queue_len, zk, root))
                    await trio.sleep(0.3)

            nursery.start_soon(sample)
            with trio.fail_after(60):
                async with trio.open_nursery() as talkers:
                    talkers.start_soon(_talk, d[1], "a", 1500)
                    talkers.start_soon(_talk, d[2], "b", 1500)
                    # Another joins mid-burst, racing the compactions.
                    await _wait_for(lambda: len(_msgs(seen[1])) >= 1200)
                    d[4] = await _start(nursery, s, 4, seen, compact_at)
                    await _wait_for(lambda: len(d[4].members) == 3)
                await _wait_for(lambda: all(len(_msgs(seen[p])) == 3000 for p in (1, 2)))
                # Wait for a compaction past the burst, then join.
                await _wait_for(lambda: bool(lengths) and lengths[-1] <= compact_at)
                d[3] = await _start(nursery, s, 3, seen, compact_at)
                await _wait_for(lambda: all(len(x.members) == 4 for x in d.values()))
                for p in (1, 2, 3):
                    await d[p].broadcast(b"late%d" % p)
                await _wait_for(lambda: all(len([m for m in _msgs(v) if m.startswith(b"late")]) == 3
                                            for v in seen.values()))
            checkpoints.extend(d[p]._cp_version for p in (3, 4))
            nursery.cancel_scope.cancel()
        return seen

    seen = trio.run(main)
    for p in (1, 2):
        msgs = _msgs(seen[p])
        assert len(msgs) == 3003
        assert [m for m in msgs if m.startswith(b"a")] == [b"a%d" % i for i in range(1500)]
        assert [m for m in msgs if m.startswith(b"b")] == [b"b%d" % i for i in range(1500)]
    joined = seen[3][0]
    assert isinstance(joined, Joined)
    assert min(checkpoints) >= 0, "the joiners did not start from a checkpoint"
    assert set(joined.members) == {_node(1), _node(2), _node(3), _node(4)}
    assert sorted(_msgs(seen[3])) == [b"late1", b"late2", b"late3"]
    for p in (1, 2):
        assert [e for e in seen[p] if e.seq >= joined.seq] == seen[3]
    # The one that joined mid-burst: exactly the suffix from its Joined.
    assert len(_msgs(seen[4])) > 3
    assert [e for e in seen[1] if e.seq >= seen[4][0].seq] == seen[4]
    _check_consistent({1: seen[1], 2: seen[2]})
    # Never anywhere near 3000 nodes: compaction (once a second, up to what
    # every member recorded about a second ago) keeps up with the burst.
    assert max(lengths) < 1200, lengths


def test_big_message_is_split_and_delivered_whole(zk: ZooKeeperServer) -> None:
    s = spec(zk, "big")
    big = os.urandom(2 << 20)

    async def body(d: dict[int, ZooKeeperDriver], seen: dict[int, list[Event]]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_talk, d[2], "small", 20)
            await d[1].broadcast(b"before")
            await d[1].broadcast(big)
            await d[1].broadcast(b"after")
        await _wait_for(lambda: all(len(_msgs(v)) == 23 for v in seen.values()))

    seen = trio.run(_two_members, s, body)
    for evs in seen.values():
        msgs = _msgs(evs)
        assert [m for m in msgs if m in (b"before", big, b"after")] == [b"before", big, b"after"]
        assert [m for m in msgs if m.startswith(b"small")] == [b"small%d" % i for i in range(20)]
    _check_consistent(seen)


def test_session_expiry_rejoins_after_compaction(zk: ZooKeeperServer) -> None:
    s, compact_at = spec(zk, "expire-compact"), 100

    async def main() -> dict[int, list[Event]]:
        seen: dict[int, list[Event]] = {}
        async with trio.open_nursery() as nursery:
            d = {p: await _start(nursery, s, p, seen, compact_at) for p in (1, 2)}
            with trio.fail_after(60):
                await _wait_for(lambda: all(len(x.members) == 2 for x in d.values()))
                async with trio.open_nursery() as talkers:
                    talkers.start_soon(_talk, d[1], "a", 300)
                    talkers.start_soon(_talk, d[2], "b", 300)
                await _wait_for(lambda: all(len(_msgs(v)) == 600 for v in seen.values()))
                # A checkpoint exists and the queue was trimmed.
                await _wait_for(lambda: _queue_len(zk, "/sheepdog-expire-compact") <= compact_at)
                client = d[1]._client
                assert client is not None
                thief = KazooClient(zk.hosts, client_id=client.client_id, timeout=SESSION)
                await trio.to_thread.run_sync(thief.start)
                await trio.to_thread.run_sync(thief.stop)
                thief.close()
                await _wait_for(lambda: any(isinstance(e, Left) and e.node == _node(1)
                                            for e in seen[2]))
                await _wait_for(lambda: len(d[1].members) == 2 and len(d[2].members) == 2)
                async with trio.open_nursery() as talkers:
                    talkers.start_soon(_talk, d[1], "c", 150)
                    talkers.start_soon(_talk, d[2], "d", 150)
                await _wait_for(lambda: all(len(_msgs(v)) == 900 for v in seen.values()))
                d[3] = await _start(nursery, s, 3, seen, compact_at)
                await _wait_for(lambda: all(len(x.members) == 3 for x in d.values()))
            nursery.cancel_scope.cancel()
        return seen

    seen = trio.run(main)
    for p in (1, 2):
        msgs = _msgs(seen[p])
        for tag, n in ((b"a", 300), (b"b", 300), (b"c", 150), (b"d", 150)):
            assert [m for m in msgs if m.startswith(tag)] == [tag + b"%d" % i for i in range(n)]
        assert [e.node for e in seen[p] if isinstance(e, Left)] == [_node(1)]
    first = seen[3][0]
    assert isinstance(first, Joined)
    assert set(first.members) == {_node(1), _node(2), _node(3)}
    _check_consistent({1: seen[1], 2: seen[2]})


def test_compacted_past_a_lost_member_fails_loudly(zk: ZooKeeperServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A member whose session was lost for longer than APPLIED_GRACE, while
    the others compacted past it, must not resume with a gap: DriverError."""
    import sheepblk.cluster.zookeeper as zkmod

    monkeypatch.setattr(zkmod, "APPLIED_GRACE", 0.0)
    s = spec(zk, "gap")
    errors: list[DriverError] = []

    async def main() -> None:
        seen: dict[int, list[Event]] = {1: []}
        async with trio.open_nursery() as nursery:
            d1 = ZooKeeperDriver(s.removeprefix("zookeeper:"))
            send, recv = trio.open_memory_channel[Event](math.inf)

            async def guarded(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    await d1.run(_node(1), send, task_status=task_status)
                except DriverError as e:
                    errors.append(e)

            await nursery.start(guarded)
            d2 = await _start(nursery, s, 2, seen, 20)
            with trio.fail_after(30):
                await _wait_for(lambda: len(d2.members) == 2)
                # Freeze node 1's fold (and so its re-join), then end its session.
                await trio.to_thread.run_sync(d1._mutex.acquire)
                client = d1._client
                assert client is not None
                thief = KazooClient(zk.hosts, client_id=client.client_id, timeout=SESSION)
                await trio.to_thread.run_sync(thief.start)
                await trio.to_thread.run_sync(thief.stop)
                thief.close()
                await _wait_for(lambda: len(d2.members) == 1)
                await _talk(d2, "m", 40)  # past compact_at: node 2 compacts alone
                await _wait_for(lambda: _queue_len(zk, "/sheepdog-gap") <= 20)
                d1._mutex.release()
                await _wait_for(lambda: bool(errors))
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert "compacted past" in str(errors[0])
