"""The local driver with real processes: order, crash detection, isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cluster_harness import Member, check_same_order, start, wait_until

from sheepblk.cluster import local
from sheepblk.cluster.driver import Event, Joined, Left, Message, make_driver
from sheepblk.proto import NodeId, SdNode


def test_restart_after_everyone_died(tmp_path: Path, spawn: list[Member]) -> None:
    spec = f"local:{tmp_path / 'shm'}"
    old = [start(spawn, spec, 7500 + i) for i in range(3)]
    wait_until(lambda: all(len(m.members()) == 3 for m in old), "3 members", members=old)
    for m in old:
        m.kill9()
    assert list((tmp_path / "shm.d").glob("*.lock"))  # stale locks left behind
    new = [start(spawn, spec, 7500 + i, msgs=3, wait_members=2) for i in (0, 3)]
    wait_until(lambda: all(len(m.messages()) == 6 for m in new), "restarted cluster talks",
               members=new)
    # Whoever joined first found nobody alive: a fresh cluster of one.
    first = min((m.events[0] for m in new), key=lambda e: e["seq"])
    assert first["ev"] == "joined" and first["members"] == [first["node"]]
    for m in new:
        assert sorted(m.members()) == [7500, 7503]
    check_same_order(new)
    # The dead members' lock files were swept.
    assert len(list((tmp_path / "shm.d").glob("*.lock"))) == 2


def _node(port: int) -> SdNode:
    return SdNode(NodeId("127.0.0.1", port))


def test_rotation_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two members in one process (flocks on separate opens exclude each
    other there too) push the log through several rotations; a third joins
    late and still learns the right membership."""
    monkeypatch.setattr(local, "ROTATE_BYTES", 2000)
    spec = f"local:{tmp_path / 'shm'}"
    seen: dict[int, list[Event]] = {}
    got_last: list[int] = []
    all_got_last = trio.Event()

    async def member(port: int, driver: local.LocalDriver, nursery: trio.Nursery) -> None:
        send, recv = trio.open_memory_channel[Event](0)
        seen[port] = []

        async def collect() -> None:
            async for ev in recv:
                seen[port].append(ev)
                if isinstance(ev, Message) and ev.payload == b"last":
                    got_last.append(port)
                    if len(got_last) == 3:
                        all_got_last.set()

        nursery.start_soon(collect)
        await nursery.start(driver.run, _node(port), send)

    async def main() -> None:
        drivers = {p: make_driver(spec) for p in (1, 2, 3)}
        async with trio.open_nursery() as nursery:
            await member(1, drivers[1], nursery)  # type: ignore[arg-type]
            await member(2, drivers[2], nursery)  # type: ignore[arg-type]
            for i in range(150):
                await drivers[1 + i % 2].broadcast(b"x" * 20 + str(i).encode())
            await member(3, drivers[3], nursery)  # type: ignore[arg-type]
            await drivers[3].broadcast(b"last")
            with trio.fail_after(20):
                await all_got_last.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert len(list((tmp_path / "shm.d").glob("log.*"))) <= local.KEEP_GENERATIONS + 1
    msgs1 = [e.payload for e in seen[1] if isinstance(e, Message)]
    assert msgs1 == [b"x" * 20 + str(i).encode() for i in range(150)] + [b"last"]
    assert [e for e in seen[1] if e.seq >= seen[2][0].seq] == seen[2]
    assert [e for e in seen[1] if e.seq >= seen[3][0].seq] == seen[3]
    first3 = seen[3][0]
    assert isinstance(first3, Joined) and [n.nid.port for n in first3.members] == [1, 2, 3]
    assert not any(isinstance(e, Left) for e in seen[1])
