"""PeerClient, the sheep's pipelined connections to other sheep: many
requests in flight on one connection reach their own answers, a peer that
hangs up fails every request in flight with NETWORK_ERROR (which the
gateway retries) and the next request connects again.

The fake sheep is test_client_pipeline's (see test_client_aio)."""

from __future__ import annotations

import pytest
import trio
from test_client_pipeline import HANG, KIB, WRITE_RESULT, FakeSheep, digest, pattern, sock_path

from sheepblk.proto import SD_SHEEP_PROTO_VER, Flag, NodeId, ObjArgs, Op, Request, Res
from sheepblk.server.peer_client import PeerClient, PeerError

__all__ = ["sock_path"]  # the fixture, used by name

N = 64


def _read_req(oid: int, n: int) -> Request:
    return Request(Op.READ_PEER, 0, 3, 0, n, ObjArgs(oid=oid).pack(), SD_SHEEP_PROTO_VER)


def _write_req(oid: int, n: int) -> Request:
    return Request(Op.WRITE_PEER, Flag.CMD_WRITE | Flag.CMD_CACHE, 3, 0, n,
                   ObjArgs(oid=oid).pack(), SD_SHEEP_PROTO_VER)


def test_many_requests_share_one_connection(sock_path: str) -> None:
    async def main() -> None:
        with FakeSheep(sock_path, batch=N) as sheep:
            nid = NodeId(sheep.host, sheep.port)
            async with trio.open_nursery() as nursery:
                peers = PeerClient()
                await nursery.start(peers.run)
                got: dict[int, bytes] = {}
                wrote: dict[int, tuple[int, bytes]] = {}

                async def reader(oid: int) -> None:
                    buf = bytearray(8 * KIB)
                    rsp, n = await peers.request(nid, _read_req(oid, len(buf)), None,
                                                 memoryview(buf))
                    assert rsp.result == Res.SUCCESS
                    got[oid] = bytes(buf[:n])

                async def writer(oid: int) -> None:
                    data = pattern(oid + 1000, 4 * KIB)
                    call = await peers.send(nid, _write_req(oid, len(data)), memoryview(data))
                    rsp, _ = await peers.result(call)
                    wrote[oid] = WRITE_RESULT.unpack(rsp.args)

                with trio.fail_after(HANG):  # a hang, not a timing threshold
                    async with trio.open_nursery() as calls:
                        for oid in range(1, N + 1):
                            calls.start_soon(reader if oid % 2 else writer, oid)
                for oid, data in got.items():
                    assert data == pattern(oid, 8 * KIB), oid
                for oid, (n, dg) in wrote.items():
                    assert (n, dg) == (4 * KIB, digest(pattern(oid + 1000, 4 * KIB))), oid
                assert len(got) + len(wrote) == N
                assert sheep.connections == 1
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_peer_hanging_up_fails_what_is_in_flight_and_reconnects(sock_path: str) -> None:
    async def main() -> None:
        with FakeSheep(sock_path, batch=N, close_after=16, answer_before_close=6) as sheep:
            nid = NodeId(sheep.host, sheep.port)
            async with trio.open_nursery() as nursery:
                peers = PeerClient()
                await nursery.start(peers.run)
                results: dict[int, object] = {}

                async def one(oid: int) -> None:
                    buf = bytearray(4 * KIB)
                    try:
                        await peers.request(nid, _read_req(oid, len(buf)), None, memoryview(buf))
                        results[oid] = bytes(buf)
                    except PeerError as e:
                        results[oid] = e

                with trio.fail_after(HANG):
                    async with trio.open_nursery() as calls:
                        for oid in range(1, 17):
                            calls.start_soon(one, oid)
                errors = [r for r in results.values() if isinstance(r, PeerError)]
                assert len(errors) == 10 and all(e.result == Res.NETWORK_ERROR for e in errors)
                for oid, r in results.items():
                    if isinstance(r, bytes):
                        assert r == pattern(oid, 4 * KIB)
                sheep.batch, sheep.close_after = 1, None
                with trio.fail_after(HANG):
                    await one(99)
                assert results[99] == pattern(99, 4 * KIB)
                assert sheep.connections == 2
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_client_not_running_refuses() -> None:
    async def main() -> None:
        with pytest.raises(PeerError) as e:
            await PeerClient().request(NodeId("127.0.0.1", 1), _read_req(1, 0))
        assert e.value.result == Res.NETWORK_ERROR

    trio.run(main)


def test_requests_behind_an_unreachable_peer_share_one_connect_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that drops our SYNs (its accept queue is full here, a host
    gone off the network in life): the requests waiting for the connect
    fail with it, instead of each trying in turn (16 requests, 16
    timeouts). Trio's MockClock jumps over the waits, so the elapsed
    (virtual) time counts the timeouts without timing anything."""
    import socket

    import trio.testing

    from sheepblk.server import peer_client

    monkeypatch.setattr(peer_client, "CONNECT_TIMEOUT", 5.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(8):  # fill the accept queue: then SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(listener.getsockname())
        fillers.append(f)
    nid = NodeId(*listener.getsockname())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            peers = PeerClient()
            await nursery.start(peers.run)
            errors: list[PeerError] = []

            async def one(oid: int) -> None:
                try:
                    await peers.request(nid, _read_req(oid, 0))
                except PeerError as e:
                    errors.append(e)

            start = trio.current_time()
            async with trio.open_nursery() as calls:
                for oid in range(16):
                    calls.start_soon(one, oid)
            assert len(errors) == 16 and "cannot connect" in str(errors[0])
            assert trio.current_time() - start < 2 * peer_client.CONNECT_TIMEOUT
            nursery.cancel_scope.cancel()

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        for f in fillers:
            f.close()
        listener.close()
