"""The gateway's retries inside the ordered stream's work half.

There the epoch cannot move: the membership event that would move it
waits in the stream behind the block being worked on. Found by the wire
fuzz campaign: a cluster op whose work half read from a node that had just
died retried for RETRY_TIMEOUT (60 s), and every node's stream waited with
it. In a work half the gateway now gives up after FROZEN_ATTEMPTS, and
Sheep.cluster_op sends the op through the stream again at the next epoch.
Trio's MockClock jumps over the pauses: nothing here waits for real time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from fake_peers import FakePeers

from sheepblk.proto import NodeId, Res, Response, SdNode
from sheepblk.server.gateway import FROZEN_ATTEMPTS, Gateway, GatewayError
from sheepblk.server.peer import PeerOps
from sheepblk.store import PlainStore

OID = 0x00ABCD0000000001
SIZE = 4 << 20


def _attempts(tmp_path: Path, frozen: bool) -> tuple[int, int]:
    """(requests sent, result) of a write whose only copy is a node that
    answers NETWORK_ERROR for ever (it died; the epoch never moves)."""
    me, dead = SdNode(NodeId("127.0.0.1", 7000)), SdNode(NodeId("127.0.0.1", 7001))
    sent = []

    class Peers(FakePeers):
        async def request(self, nid, req, data=None, rbuf=None):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            sent.append(req.opcode)
            return Response(req.opcode, Res.NETWORK_ERROR), 0

    async def wait_epoch(old: int, pause: float) -> None:
        await trio.sleep(pause)  # the epoch stays: the pause runs out

    gw = Gateway(me, PeerOps(PlainStore(str(tmp_path))), Peers(),  # type: ignore[arg-type]
                 lambda oid, copies: [dead], lambda oid: SIZE, lambda: 4,
                 wait_epoch=wait_epoch, frozen=lambda: frozen)
    result = int(Res.SUCCESS)

    async def main() -> None:
        nonlocal result
        with pytest.raises(GatewayError) as e:
            await gw.write(OID, 0, memoryview(b"x" * 512), sync=False)
        result = e.value.result

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return len(sent), result


def test_a_work_half_gives_up_after_a_few_attempts(tmp_path: Path) -> None:
    sent, result = _attempts(tmp_path, frozen=True)
    assert sent == FROZEN_ATTEMPTS
    assert result == Res.NETWORK_ERROR  # retryable: cluster_op sends the op again


def test_other_requests_retry_until_the_deadline(tmp_path: Path) -> None:
    """Outside a work half the epoch will move (the node's Left is applied
    in the meantime), so the gateway keeps trying until RETRY_TIMEOUT."""
    sent, result = _attempts(tmp_path, frozen=False)
    assert sent > 10 * FROZEN_ATTEMPTS
    assert result == Res.NETWORK_ERROR


def test_a_strict_write_retried_after_a_death_halts(tmp_path: Path) -> None:
    """Strict mode is checked at every epoch a write tries. Found by
    Sheepdog's test 080: the node killed just before a write failed its
    first attempt; the retry at the next epoch, with one zone fewer, wrote
    the object to the copies left, and only the inode's write halted."""
    me, dead = SdNode(NodeId("127.0.0.1", 7000)), SdNode(NodeId("127.0.0.1", 7001))
    epoch = [1]
    sent = []

    class Peers(FakePeers):
        async def request(self, nid, req, data=None, rbuf=None):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            sent.append((req.opcode, epoch[0]))
            return Response(req.opcode, Res.NETWORK_ERROR), 0

    async def wait_epoch(old: int, pause: float) -> None:
        epoch[0] = old + 1  # the dead node's departure makes an epoch

    gw = Gateway(me, PeerOps(PlainStore(str(tmp_path))), Peers(),  # type: ignore[arg-type]
                 lambda oid, copies: [dead] if epoch[0] == 1 else [me],
                 lambda oid: SIZE, lambda: epoch[0], wait_epoch=wait_epoch,
                 strict_short=lambda oid, copies: epoch[0] > 1)

    async def main() -> None:
        with pytest.raises(GatewayError) as e:
            await gw.create_and_write(OID, 0, memoryview(b"x" * 512), sync=False)
        assert e.value.result == Res.HALT

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(sent) == 1 and sent[0][1] == 1  # one try at epoch 1, none after
    assert not (tmp_path / "obj" / f"{OID:016x}").exists()  # nothing written here
