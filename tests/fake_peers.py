"""A stand-in for PeerClient in gateway tests: a subclass defines
`request` (one answer per request); `send` asks it at once and `result`
hands the answer back, the two halves the gateway uses to write every
copy without a task per copy."""

from __future__ import annotations

import trio

from sheepblk.proto import NodeId, Request, Response


class FakePeers:
    async def request(self, nid: NodeId, req: Request, data: memoryview | None = None,
                      rbuf: memoryview | None = None) -> tuple[Response, int]:
        raise NotImplementedError

    async def send(self, nid: NodeId, req: Request, data: memoryview | None = None,
                   rbuf: memoryview | None = None) -> tuple[Response, int]:
        return await self.request(nid, req, data, rbuf)

    async def result(self, call: tuple[Response, int]) -> tuple[Response, int]:
        await trio.lowlevel.checkpoint()
        return call
