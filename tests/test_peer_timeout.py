"""A peer that takes a request and never answers (a stopped process, a
hung disk) fails that request with NETWORK_ERROR after REQUEST_TIMEOUT,
which the gateway retries, instead of holding the write forever."""

from __future__ import annotations

import pytest
import trio

from sheepblk.proto import NodeId, Op, Request, Res
from sheepblk.server import peer_client
from sheepblk.server.peer_client import PeerClient, PeerError


def test_a_silent_peer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_client, "REQUEST_TIMEOUT", 0.5)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        held: list[trio.SocketStream] = []

        async def silent(stream: trio.SocketStream) -> None:
            held.append(stream)  # read nothing, answer nothing
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, silent, listeners)
            client = PeerClient()
            await nursery.start(client.run)
            with pytest.raises(PeerError) as e:
                await client.request(NodeId("127.0.0.1", port),
                                     Request(Op.READ_PEER, 0, 1, 0, 0))
            assert e.value.result == Res.NETWORK_ERROR
            assert "no answer" in str(e.value)
            await client.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)
