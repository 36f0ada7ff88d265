"""Async connections from this sheep to other sheep (for *_PEER requests).

One pipelined connection per peer (client/aio.py's AsyncLink): every
request of the gateway, recovery and the rest goes out on it at once,
stamped with an id, and the peer answers in any order. Why: with a
socket per request in flight, each forwarded write cost the gateway a
trip through the scheduler per syscall and the peer a task and a sendmsg
of its own; on one stream the peer reads many requests in one receive and
the gateway reads their answers the same way. A broken connection fails
every request in flight on it with NETWORK_ERROR, which the gateway
retries; the next request connects again.
"""

from __future__ import annotations

from typing import NamedTuple

import trio

from ..client.aio import AsyncLink, Call
from ..client.errors import NetworkError
from ..proto import NodeId, Request, Res, Response

CONNECT_TIMEOUT = 5.0
# One request, sent and answered. A peer that stopped (SIGSTOP, a hung
# disk, a lost link the kernel has not noticed) would otherwise hold the
# gateway's write forever; past this every request in flight to it fails
# with NETWORK_ERROR, which the gateway retries until its own deadline.
REQUEST_TIMEOUT = 30.0


class PeerError(Exception):
    result = Res.NETWORK_ERROR


class PeerCall(NamedTuple):
    link: AsyncLink
    call: Call


class PeerClient:
    """Resource handling: the connections' reader tasks run in `run`'s
    nursery (start it with nursery.start before the first request); its
    end, or aclose(), closes every connection."""

    def __init__(self) -> None:
        self._links: dict[NodeId, AsyncLink] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self.aclose()

    def _link(self, nid: NodeId) -> AsyncLink:
        link = self._links.get(nid)
        if link is None:
            if self._nursery is None:
                raise PeerError(f"cannot reach {nid}: the peer client is not running")
            link = self._links[nid] = AsyncLink(nid.addr, nid.port, self._nursery,
                                                timeout=REQUEST_TIMEOUT,
                                                connect_timeout=CONNECT_TIMEOUT)
        return link

    async def request(self, nid: NodeId, req: Request, data: memoryview | None = None,
                      rbuf: memoryview | None = None) -> tuple[Response, int]:
        """Send one request; the answer's payload lands in `rbuf`. Returns
        the response and how many payload bytes arrived."""
        return await self.result(await self.send(nid, req, data, rbuf))

    async def send(self, nid: NodeId, req: Request, data: memoryview | None = None,
                   rbuf: memoryview | None = None) -> PeerCall:
        """Send one request and return at once (AsyncLink.send says why);
        `result` waits for its answer."""
        link = self._link(nid)
        try:
            return PeerCall(link, await link.send(req, data, rbuf=rbuf))
        except NetworkError as e:
            raise PeerError(str(e)) from e

    async def result(self, call: PeerCall) -> tuple[Response, int]:
        """The answer to a request `send` sent: the response and how many
        payload bytes arrived."""
        try:
            rsp, out = await call.link.result(call.call, check=False)
        except NetworkError as e:
            raise PeerError(str(e)) from e
        return rsp, len(out)

    async def drop(self, nid: NodeId) -> None:
        """Fail every request in flight to `nid` (NETWORK_ERROR) and close
        its connection; the next request connects again. For a node that
        left the membership: what it answers no longer counts, and one cut
        off would hold every request in flight to it until REQUEST_TIMEOUT
        (the gateway retries them at once instead, to the new owners; a
        write held so long could land after its client, giving up on it,
        had written the block again through another sheep)."""
        link = self._links.pop(nid, None)
        if link is not None:
            await link.aclose()

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.aclose()
