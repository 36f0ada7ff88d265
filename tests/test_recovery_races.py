"""A recovery run must not end, and let the writes waiting for it in,
while an object a client asked for is still being recovered out of turn.

Found by scripts/multihost_check.py (seed 1, after the power-off
schedule): a cluster back from kill -9 compares copies with their first
owner's ("comparing copies after an unclean stop"). A write came for an
object the run's feed had not reached, so the object was recovered at
once, outside the feed; the feed then skipped it (in flight), the run
ended and released every waiter, the write landed on our copy, and only
then the out-of-turn recovery stored the first owner's copy it had read
before the write: our copy went back to the old bytes, and reads through
this sheep returned them (a stale read; a lost write had no later write
come to that block).
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from fake_peers import FakePeers

from sheepblk.proto import NodeId, ObjArgs, Op, Res, Response, SdNode
from sheepblk.ring import Ring
from sheepblk.server.peer import PeerOps
from sheepblk.server.recovery import Recovery
from sheepblk.store import NodeConfig, PlainStore

SIZE = 4 << 20
ME, FIRST = SdNode(NodeId("10.0.0.1", 7000), 128, 1), SdNode(NodeId("10.0.0.2", 7000), 128, 2)
RING = Ring([ME, FIRST])


def objects_first_owned_by_the_other(n: int) -> list[int]:
    out: list[int] = []
    oid = 0x00ABCD0000000000
    while len(out) < n:
        oid += 1
        if RING.oid_to_nodes(oid, 2)[0].nid == FIRST.nid:
            out.append(oid)
    return out


class View:
    """The few things recovery asks of a ClusterView: one epoch, two nodes."""

    me = ME
    members = [ME, FIRST]
    epoch = 1
    config = NodeConfig(ctime=1, copies=2)

    def ring_at(self, epoch: int) -> Ring:
        return RING

    def copies_of(self, oid: int) -> int:
        return 2

    def ec_of(self, oid: int) -> None:
        return None  # replicated

    def owners_in(self, ring: Ring, oid: int, copies: int = 0) -> tuple[SdNode, ...]:
        return ring.oid_to_nodes(oid, copies or 2)

    def object_size(self, oid: int) -> int:
        return SIZE


class Peers(FakePeers):
    """The first owner: no other objects, a hash that differs from ours,
    and its copy (the old bytes) handed out once `release[oid]` is set."""

    def __init__(self) -> None:
        self.release: dict[int, trio.Event] = {}
        self.asked: list[int] = []  # the objects whose copy was asked for, in order
        self._more = trio.Event()

    async def asked_for(self, n: int) -> None:
        """Until `n` copies were asked for (our hashes are taken in threads)."""
        with trio.fail_after(10):
            while len(self.asked) < n:
                self._more = trio.Event()
                await self._more.wait()

    async def request(self, nid, req, data=None, rbuf=None):  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        if req.opcode == Op.GET_OBJ_LIST:
            return Response(req.opcode, Res.SUCCESS), 0
        if req.opcode == Op.GET_HASH:
            return Response(req.opcode, Res.SUCCESS), 0  # digest zeros: not ours
        assert req.opcode == Op.READ_PEER
        oid = ObjArgs.unpack(req.args).oid
        self.asked.append(oid)
        self._more.set()
        await self.release.setdefault(oid, trio.Event()).wait()
        assert rbuf is not None
        rbuf[:4096] = b"old!" * 1024
        return Response(req.opcode, Res.SUCCESS), 4096


def test_a_run_ends_only_after_the_objects_recovered_out_of_turn(tmp_path: Path) -> None:
    store = PlainStore(str(tmp_path))
    store.format()
    oids = objects_first_owned_by_the_other(3)
    for oid in oids:
        store.create_and_write(oid, SIZE, 0, memoryview(b"ours" * 1024), sync=True)
    peer = PeerOps(store, lambda: 1)
    peers = Peers()
    finished: list[tuple[int, bool]] = []

    async def done(epoch: int, ok: bool) -> None:
        finished.append((epoch, ok))

    rec = Recovery(View(), store, peer, peers, None, done)  # type: ignore[arg-type]
    target: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # After an unclean stop: our copies are compared with FIRST's.
            rec.start(nursery, 1, reconcile=True, same_ring=True)
            await peers.asked_for(2)
            await trio.testing.wait_all_tasks_blocked()
            a, b = peers.asked  # the feed's two (its limit)
            (c,) = set(oids) - {a, b}
            target.append(c)
            # A write for the third recovers it out of turn, then writes.
            written = trio.Event()

            async def client_write() -> None:
                await rec.ready(c)  # as a WRITE_PEER does before it writes
                await peer.write(c, 0, memoryview(b"new!" * 1024), SIZE, sync=True)
                written.set()

            nursery.start_soon(client_write)
            await peers.asked_for(3)
            for oid in (a, b):  # the feed's two finish: it has nothing else to start
                peers.release.setdefault(oid, trio.Event()).set()
            with trio.move_on_after(2):  # the run ending, storing in threads
                await written.wait()
            assert not written.is_set(), "the write went in while its object was recovering"
            peers.release.setdefault(c, trio.Event()).set()  # the out-of-turn one ends
            with trio.fail_after(10):
                await written.wait()

    trio.run(main)
    buf = memoryview(bytearray(4096))
    store.read_into(target[0], 0, buf)
    assert bytes(buf) == b"new!" * 1024
    assert finished == [(1, True)]
