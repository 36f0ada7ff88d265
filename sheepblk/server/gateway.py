"""The gateway: object I/O for any client, wherever the copies live.

For each object it asks `placement` for the owners (this node alone on a
single-node cluster; the ring of the current epoch once there are more),
serves its own copy through PeerOps and forwards *_PEER requests to the
others in parallel. A write is answered once every copy is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ..proto import (
    SD_SHEEP_PROTO_VER,
    Flag,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
)
from .peer import PeerOps, result_of
from .peer_client import PeerClient

Placement = Callable[[int, int], Sequence[SdNode]]


class GatewayError(Exception):
    def __init__(self, result: int, msg: str = "") -> None:
        super().__init__(msg or f"result {result:#x}")
        self.result = result


class Gateway:
    """Error handling: every method raises GatewayError (or a StoreError
    from the local copy) carrying the protocol result to answer."""

    def __init__(self, me: SdNode, peer: PeerOps, peers: PeerClient,
                 placement: Placement, object_size: Callable[[int], int],
                 epoch: Callable[[], int]) -> None:
        self.me = me
        self.peer = peer
        self.peers = peers
        self.placement = placement
        self.object_size = object_size
        self.epoch = epoch

    def owners(self, oid: int, copies: int) -> Sequence[SdNode]:
        return self.placement(oid, copies)

    def _is_me(self, node: SdNode) -> bool:
        return node.nid == self.me.nid

    async def _remote(self, node: SdNode, opcode: int, oid: int, *, offset: int = 0,
                      data: memoryview | None = None, rbuf: memoryview | None = None,
                      length: int = 0, flags: int = 0, cow_oid: int = 0,
                      copies: int = 0) -> None:
        if data is not None:
            flags |= Flag.CMD_WRITE
            length = len(data)
        req = Request(opcode, flags, self.epoch(), 0, length,
                      ObjArgs(oid=oid, cow_oid=cow_oid, copies=copies, offset=offset).pack(),
                      SD_SHEEP_PROTO_VER)
        rsp, _ = await self.peers.request(node.nid, req, data, rbuf)
        if rsp.result != Res.SUCCESS:
            raise GatewayError(rsp.result)

    async def _all(self, nodes: Sequence[SdNode], local, remote) -> None:  # type: ignore[no-untyped-def]
        """Run on every owner; the first failure (by owner order) wins."""
        if len(nodes) == 1:
            node = nodes[0]
            await (local() if self._is_me(node) else remote(node))
            return
        errors: list[BaseException | None] = [None] * len(nodes)

        async def one(i: int, node: SdNode) -> None:
            try:
                await (local() if self._is_me(node) else remote(node))
            except Exception as e:  # noqa: BLE001 - collected, re-raised below
                errors[i] = e

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(one, i, node)
        for e in errors:
            if e is not None:
                raise GatewayError(result_of(e), str(e)) from e

    async def read(self, oid: int, offset: int, buf: memoryview, *, copies: int = 0,
                   flags: int = 0) -> None:
        nodes = self.owners(oid, copies)
        size = self.object_size(oid)
        last: BaseException | None = None
        for node in nodes:  # our own copy first: no network
            if self._is_me(node):
                try:
                    await self.peer.read(oid, offset, buf, size)
                    return
                except Exception as e:  # noqa: BLE001 - e.g. CorruptObject: try another copy
                    last = e
                    if len(nodes) == 1:
                        raise
        for node in nodes:
            if self._is_me(node):
                continue
            try:
                await self._remote(node, Op.READ_PEER, oid, offset=offset, rbuf=buf,
                                   length=len(buf), flags=flags)
                return
            except Exception as e:  # noqa: BLE001 - try the next copy
                last = e
                if isinstance(e, GatewayError) and e.result in (Res.INVALID_PARMS,):
                    raise
        raise GatewayError(result_of(last) if last else Res.NO_OBJ, str(last))

    async def write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                    copies: int = 0) -> None:
        size = self.object_size(oid)
        flags = 0 if sync else Flag.CMD_CACHE
        await self._all(
            self.owners(oid, copies),
            lambda: self.peer.write(oid, offset, data, size, sync=sync),
            lambda n: self._remote(n, Op.WRITE_PEER, oid, offset=offset, data=data,
                                   flags=flags))

    async def create_and_write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                               cow_oid: int = 0, copies: int = 0) -> None:
        size = self.object_size(oid)
        nodes = self.owners(oid, copies)
        if cow_oid and not (len(nodes) == 1 and self._is_me(nodes[0])):
            # Copies may live where the source does not: send whole objects.
            full = memoryview(bytearray(size))
            await self.read(cow_oid, 0, full, copies=copies)
            full[offset:offset + len(data)] = data
            data, offset, cow_oid = full, 0, 0
        flags = 0 if sync else Flag.CMD_CACHE
        await self._all(
            nodes,
            lambda: self.peer.create_and_write(oid, offset, data, size, cow_oid=cow_oid,
                                               sync=sync),
            lambda n: self._remote(n, Op.CREATE_AND_WRITE_PEER, oid, offset=offset,
                                   data=data, flags=flags, cow_oid=cow_oid, copies=copies))

    async def remove(self, oid: int, *, copies: int = 0) -> None:
        await self._all(
            self.owners(oid, copies),
            lambda: self.peer.remove(oid),
            lambda n: self._remote(n, Op.REMOVE_PEER, oid))

    async def flush(self, nodes: Sequence[SdNode]) -> None:
        await self._all(nodes, self.peer.flush,
                        lambda n: self._remote(n, Op.FLUSH_PEER, 0))
