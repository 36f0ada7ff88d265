"""A write let in at one epoch and still waiting for its worker thread
when the epoch moves on must reach the store before a recovery read of
the next epoch is served (found by test_nbd_cluster: a new owner recovered
an object from a copy that had not yet taken a write every owner of the
previous epoch had acknowledged, and lost that write for good)."""

from __future__ import annotations

import threading
from pathlib import Path

import trio
import trio.lowlevel
import trio.testing

from sheepblk.server.peer import InFlightWrites, PeerOps
from sheepblk.store import PlainStore

OID = 0x00ABCD0000000001
SIZE = 4 << 20


class SlowStore(PlainStore):
    """Writes wait for `go` (the store's thread is busy elsewhere)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.go = threading.Event()

    def write(self, oid: int, offset: int, data: memoryview, *, sync: bool) -> None:
        self.go.wait(30)
        super().write(oid, offset, data, sync=sync)


def test_recovery_read_waits_for_writes_let_in_before_its_epoch(tmp_path: Path) -> None:
    store = SlowStore(str(tmp_path))
    store.format()
    store.create_and_write(OID, SIZE, 0, memoryview(b"old!" * 1024), sync=True)
    epoch = [4]
    peer = PeerOps(store, lambda: epoch[0])
    seen: list[bytes] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # A sync write goes to a thread, where it waits.
            nursery.start_soon(lambda: peer.write(OID, 0, memoryview(b"new!" * 1024), SIZE,
                                                  sync=True))
            await trio.testing.wait_all_tasks_blocked()
            epoch[0] = 5

            async def recovery_read() -> None:
                await peer.in_flight.settled(OID, 5)
                buf = memoryview(bytearray(4096))
                await peer.read(OID, 0, buf, SIZE)
                seen.append(bytes(buf))

            nursery.start_soon(recovery_read)
            await trio.testing.wait_all_tasks_blocked()
            assert not seen  # still held: the epoch-4 write has not landed
            store.go.set()

    trio.run(main)
    assert seen == [b"new!" * 1024]


def test_writes_of_the_readers_epoch_do_not_hold_it() -> None:
    """Those also go to the new owner, which applies them after its own
    recovery of the object: waiting for them could only slow recovery."""
    fl = InFlightWrites()
    done = []

    async def main() -> None:
        with fl.change(OID, 5), fl.change(OID + 1, 4):
            with trio.fail_after(5):
                await fl.settled(OID, 5)
            done.append(True)

    trio.run(main)
    assert done == [True]


def test_a_write_attempt_stamps_the_epoch_its_copies_were_chosen_at(tmp_path: Path) -> None:
    """The gateway chose the copies of epoch 4 ([b]); before its request
    went out the epoch moved to 5 (copies [b, c]). Found by
    test_nbd_cluster: the request to b went out stamped 5, b took it, and
    c, recovering the object from b, never got the write. The request must
    carry 4, so b refuses it and the write is tried again at 5."""
    from fake_peers import FakePeers

    from sheepblk.proto import NodeId, Op, Res, Response, SdNode
    from sheepblk.server.gateway import Gateway

    me, b, c = (SdNode(NodeId("127.0.0.1", p)) for p in (7000, 7001, 7002))
    epoch = [4]
    sent: list[tuple[int, int]] = []  # (port, epoch) of each WRITE_PEER

    def placement(oid: int, copies: int) -> list[SdNode]:
        owners = [b] if epoch[0] == 4 else [b, c]
        epoch[0] = 5  # the join lands as soon as the copies are chosen
        return owners

    class Peers(FakePeers):
        async def request(self, nid: NodeId, req, data=None, rbuf=None):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            if req.opcode == Op.WRITE_PEER:
                sent.append((nid.port, req.epoch))
            result = Res.SUCCESS if req.epoch == 5 else Res.OLD_NODE_VER
            return Response(req.opcode, result), 0

    async def wait_epoch(old: int, pause: float) -> None:
        await trio.lowlevel.checkpoint()

    gw = Gateway(me, PeerOps(PlainStore(str(tmp_path))), Peers(), placement,  # type: ignore[arg-type]
                 lambda oid: SIZE, lambda: epoch[0], wait_epoch=wait_epoch)
    trio.run(lambda: gw.write(OID, 0, memoryview(b"x" * 512), sync=False))
    assert sent[0] == (7001, 4)
    assert sorted(sent[1:]) == [(7001, 5), (7002, 5)]
