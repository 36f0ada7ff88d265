"""The gateway: object I/O for any client, wherever the copies live.

For each object it asks `placement` for the owners (this node alone on a
single-node cluster; the ring of the current epoch once there are more),
serves its own copy through PeerOps and forwards *_PEER requests to the
others in parallel. A write is answered once every copy is written.

Why retries live here: a membership change races with every request. A
peer at another epoch answers OLD/NEW_NODE_VER, a node that just died
refuses the connection before the driver reports it. The gateway waits for
its own epoch to move (or a short pause) and sends again to the owners of
the then-current ring, until RETRY_TIMEOUT; the client never sees these.
Writes are idempotent (same bytes at the same offset), so resending to a
copy that already took them is harmless.

Strict mode (`dog cluster format -t`) halts writes unless every copy of
the object has a live zone.

Fenced (the node's cluster driver has lost its lease, Sheep.fenced): the
others may have expelled this node and be writing without it, so no
attempt starts, and no attempt touches our own copy, until the lease is
back; the request waits as for a retryable answer, then answers HALT
(at once if its client has closed its connection meanwhile).

Halt: with fewer live zones than a majority of an object's copies
(copies // 2 + 1), I/O is refused with SD_RES_HALT instead of taking writes
that too few copies would hold; 2 zones of copies=3 go on, 1 zone of
copies=2 halts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

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
from ..store import NoObject
from .gateway_ec import ErasureIO
from .peer import PeerOps, result_of
from .peer_client import PeerCall, PeerClient, PeerError

Placement = Callable[[int, int], Sequence[SdNode]]
T = TypeVar("T")
log = logging.getLogger("sheep.gateway")

# Results that mean "the cluster is changing under us": retried, not answered.
RETRYABLE = frozenset({Res.OLD_NODE_VER, Res.NEW_NODE_VER, Res.NETWORK_ERROR,
                       Res.WAIT_FOR_JOIN, Res.WAIT_FOR_FORMAT, Res.KILLED, Res.SHUTDOWN})
# How long a request keeps retrying; a dead node is noticed within seconds
# (flock release, ZooKeeper session timeout), this leaves a wide margin.
RETRY_TIMEOUT = 60.0
# The pause between retries when the epoch does not move.
RETRY_PAUSE = 0.3
# How often a fenced gateway looks whether it may go on.
FENCE_PAUSE = 0.05
# In the ordered stream's work half the epoch cannot move: the membership
# event that would move it waits in the stream behind the running block. A
# retryable failure there is tried only this often, then answered, and the
# op goes through the stream again once the epoch has moved
# (Sheep.cluster_op), instead of holding every node's stream until
# RETRY_TIMEOUT.
FROZEN_ATTEMPTS = 3


async def _no_wait(epoch: int, delay: float) -> None:
    await trio.sleep(delay)


async def _no_gate(oid: int) -> None:
    return None


async def _no_fetch(oid: int) -> bool:
    return False


class GatewayError(Exception):
    def __init__(self, result: int, msg: str = "") -> None:
        super().__init__(msg or f"result {result:#x}")
        self.result = result


class Gateway:
    """Error handling: every method raises GatewayError (or a StoreError
    from the local copy) carrying the protocol result to answer."""

    def __init__(self, me: SdNode, peer: PeerOps, peers: PeerClient,
                 placement: Placement, object_size: Callable[[int], int],
                 epoch: Callable[[], int],
                 wait_epoch: Callable[[int, float], Awaitable[None]] = _no_wait,
                 ready: Callable[[int], Awaitable[None]] = _no_gate,
                 halted: Callable[[int, int], bool] = lambda oid, copies: False,
                 fetch_missing: Callable[[int], Awaitable[bool]] = _no_fetch,
                 strict_short: Callable[[int, int], bool] = lambda oid, copies: False,
                 member: Callable[[SdNode], bool] = lambda node: True,
                 frozen: Callable[[], bool] = lambda: False,
                 fenced: Callable[[], bool] = lambda: False,
                 abandoned: Callable[[], bool] = lambda: False,
                 ec_of: Callable[[int, int], tuple[int, int] | None] = lambda oid, p: None,
                 stored_size: Callable[[int, int], int] | None = None) -> None:
        self.me = me
        self.peer = peer
        self.peers = peers
        self.placement = placement
        self.object_size = object_size
        self.epoch = epoch
        self.wait_epoch = wait_epoch
        self.ready = ready
        self.halted = halted
        self.fetch_missing = fetch_missing
        self.strict_short = strict_short
        self.member = member
        self.frozen = frozen  # called from the stream's work half
        self.fenced = fenced
        # The client of the running request went away while we were cut off
        # (fenced now, or expelled since the request came: Sheep.abandoned).
        self.abandoned = abandoned
        # Erasure-coded data objects: (D, P) of an oid, or None (replicated).
        self.ec_of = ec_of
        self.stored_size = stored_size or (lambda oid, policy: object_size(oid))
        self.erasure = ErasureIO(self)

    def _check_strict(self, oid: int, copies: int) -> None:
        """Strict mode (`dog cluster format -t`): a write is taken only
        when every copy gets a zone of its own, so what was written has
        the redundancy promised; Sheepdog halts it before it starts."""
        if self.strict_short(oid, copies):
            raise GatewayError(Res.HALT, "not enough zones for a strict-mode write")

    async def _retry(self, oid: int, copies: int,
                     attempt: Callable[[int], Awaitable[T]], *, write: bool = False) -> T:
        """Run `attempt(epoch)` until it succeeds or fails for a reason of
        its own. An attempt works at the one epoch it is given: it picks
        the copies by that epoch's ring (before its first checkpoint) and
        sends its peer requests stamped with it, so a peer that has moved
        on refuses them (OLD_NODE_VER) and the next attempt goes to the
        new epoch's copies. Stamping a later epoch on requests to the old
        copies would let a write bypass a new owner that is recovering the
        object from an old one, and be lost there. A write checks strict
        mode at every epoch it tries: a node that died under the first
        attempt must halt the retry, not leave it one copy short."""
        deadline = trio.current_time() + RETRY_TIMEOUT
        attempts = 0
        while True:
            if attempts and self.abandoned():
                # Its client gave up while we were cut off, and may have
                # written the same block since, through another sheep: this
                # request would land on top of that. Let it go (what an
                # attempt before may have left on some copies is as
                # undefined as any failed write's).
                raise GatewayError(Res.HALT, "the client went away while we were cut off")
            if self.fenced():
                if trio.current_time() > deadline or self.abandoned():
                    raise GatewayError(Res.HALT, "cut off from the cluster driver")
                await trio.sleep(FENCE_PAUSE)
                continue
            if self.halted(oid, copies):
                raise GatewayError(Res.HALT, "too few living nodes")
            if write:
                self._check_strict(oid, copies)
            epoch = self.epoch()
            try:
                return await attempt(epoch)
            except GatewayError as e:
                attempts += 1
                if (e.result not in RETRYABLE or trio.current_time() > deadline
                        or (attempts >= FROZEN_ATTEMPTS and self.frozen())):
                    raise
                log.debug("retrying %016x at epoch %d: %s", oid, epoch, e)
            await self.wait_epoch(epoch, RETRY_PAUSE)

    def owners(self, oid: int, copies: int) -> Sequence[SdNode]:
        return self.placement(oid, copies)

    def _is_me(self, node: SdNode) -> bool:
        return node.nid == self.me.nid

    def _same_epoch(self, epoch: int) -> None:
        """A local change may start only at the epoch of its attempt (the
        remote ones were sent with it): after a wait that saw the epoch
        move, the attempt fails as a peer's would (see _retry). Nor while
        fenced: the attempt is retried once the lease is back."""
        if self.epoch() != epoch:
            raise GatewayError(Res.OLD_NODE_VER, "the epoch moved on")
        if self.fenced():
            raise GatewayError(Res.NETWORK_ERROR, "cut off from the cluster driver")

    async def _remote(self, node: SdNode, opcode: int, oid: int, *, epoch: int,
                      offset: int = 0,
                      data: memoryview | None = None, rbuf: memoryview | None = None,
                      length: int = 0, flags: int = 0, cow_oid: int = 0,
                      copies: int = 0) -> None:
        await self._answered(await self._send(node, opcode, oid, epoch=epoch, offset=offset,
                                              data=data, rbuf=rbuf, length=length, flags=flags,
                                              cow_oid=cow_oid, copies=copies))

    async def _send(self, node: SdNode, opcode: int, oid: int, *, epoch: int,
                    offset: int = 0,
                    data: memoryview | None = None, rbuf: memoryview | None = None,
                    length: int = 0, flags: int = 0, cow_oid: int = 0,
                    copies: int = 0) -> PeerCall:
        """Send a peer request; `_answered` waits for its answer."""
        if data is not None:
            flags |= Flag.CMD_WRITE
            length = len(data)
        req = Request(opcode, flags, epoch, 0, length,
                      ObjArgs(oid=oid, cow_oid=cow_oid, copies=copies, offset=offset).pack(),
                      SD_SHEEP_PROTO_VER)
        return await self.peers.send(node.nid, req, data, rbuf)

    async def _answered(self, call: PeerCall) -> None:
        rsp, _ = await self.peers.result(call)
        if rsp.result != Res.SUCCESS:
            raise GatewayError(rsp.result)

    async def _all(self, nodes: Sequence[SdNode], local: Callable[[], Awaitable[None]],
                   send: Callable[[SdNode], Awaitable[PeerCall]]) -> None:
        """Change every owner's copy: the requests to the others go out
        first, then our own copy changes while they travel, then every
        answer is awaited (no task per copy). The first failure (by owner
        order) wins, once every copy has answered."""
        errors: list[BaseException | None] = [None] * len(nodes)
        calls: list[PeerCall | None] = [None] * len(nodes)
        for i, node in enumerate(nodes):
            if not self._is_me(node):
                try:
                    calls[i] = await send(node)
                except Exception as e:  # noqa: BLE001 - collected, re-raised below
                    errors[i] = e
        for i, node in enumerate(nodes):
            if self._is_me(node):
                try:
                    await local()
                except Exception as e:  # noqa: BLE001 - collected, re-raised below
                    errors[i] = e
        for i, call in enumerate(calls):
            if call is not None:
                try:
                    await self._answered(call)
                except Exception as e:  # noqa: BLE001 - collected, re-raised below
                    errors[i] = e
        _raise_first(errors)

    async def read(self, oid: int, offset: int, buf: memoryview, *, copies: int = 0,
                   flags: int = 0) -> None:
        code = self.ec_of(oid, 0)
        if code is not None:
            await self.erasure.read(oid, offset, buf, *code)
            return
        await self._retry(oid, copies,
                          lambda epoch: self._read(oid, offset, buf, copies, flags, epoch))

    async def _read(self, oid: int, offset: int, buf: memoryview, copies: int,
                    flags: int, epoch: int) -> None:
        nodes = self.owners(oid, copies)
        size = self.object_size(oid)
        last: BaseException | None = None
        for node in nodes:  # our own copy first: no network
            if self._is_me(node):
                try:
                    await self.ready(oid)
                    self._same_epoch(epoch)
                    await self.peer.read(oid, offset, buf, size)
                    return
                except Exception as e:  # noqa: BLE001 - fail over to another copy
                    last = e
                    if len(nodes) == 1:
                        raise
        if self.fenced():  # not another copy either: it may be as old as ours
            raise GatewayError(Res.NETWORK_ERROR, "cut off from the cluster driver")
        retry: BaseException | None = None
        for node in nodes:
            if self._is_me(node):
                continue
            try:
                await self._remote(node, Op.READ_PEER, oid, epoch=epoch, offset=offset, rbuf=buf,
                                   length=len(buf), flags=flags)
                return
            except Exception as e:  # noqa: BLE001 - try the next copy
                if isinstance(e, GatewayError) and e.result in (Res.INVALID_PARMS,):
                    raise
                if result_of(e) in RETRYABLE:
                    retry = e
                else:
                    last = e
        # A copy that could not answer for now beats one that is missing.
        err = retry or last
        raise GatewayError(result_of(err) if err else Res.NO_OBJ, str(err))

    async def write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                    copies: int = 0) -> None:
        code = self.ec_of(oid, 0)
        if code is not None:
            await self.erasure.write(oid, offset, data, *code, sync=sync)
            return
        size = self.object_size(oid)
        flags = 0 if sync else Flag.CMD_CACHE

        async def local(epoch: int) -> None:
            await self.ready(oid)
            self._same_epoch(epoch)
            try:
                await self.peer.write(oid, offset, data, size, sync=sync)
            except NoObject:
                # Our recovery never saw it in any list: pull it, then write.
                if not await self.fetch_missing(oid):
                    raise
                self._same_epoch(epoch)
                await self.peer.write(oid, offset, data, size, sync=sync)

        await self._retry(oid, copies, lambda epoch: self._all(
            self.owners(oid, copies), lambda: local(epoch),
            lambda n: self._send(n, Op.WRITE_PEER, oid, epoch=epoch, offset=offset,
                                 data=data, flags=flags)), write=True)

    async def create_and_write(self, oid: int, offset: int, data: memoryview, *, sync: bool,
                               cow_oid: int = 0, copies: int = 0, copy_policy: int = 0) -> None:
        # strict mode: before the whole-object read of a copy-on-write too
        self._check_strict(oid, copies)
        code = self.ec_of(oid, copy_policy)
        if code is not None:
            await self.erasure.create_and_write(oid, offset, data, *code, sync=sync,
                                                cow_oid=cow_oid, policy=copy_policy)
            return
        size = self.object_size(oid)
        nodes = self.owners(oid, copies)
        if cow_oid and not self._cow_here(nodes, cow_oid, copies):
            # Copies may live where the source does not: send whole objects.
            full = memoryview(bytearray(size))
            await self.read(cow_oid, 0, full, copies=copies)
            full[offset:offset + len(data)] = data
            data, offset, cow_oid = full, 0, 0
        flags = 0 if sync else Flag.CMD_CACHE

        async def local(epoch: int) -> None:
            await self.ready(oid)
            if cow_oid:
                await self.ready(cow_oid)
            self._same_epoch(epoch)
            await self.peer.create_and_write(oid, offset, data, size, cow_oid=cow_oid,
                                             sync=sync)

        await self._retry(oid, copies, lambda epoch: self._all(
            self.owners(oid, copies), lambda: local(epoch),
            lambda n: self._send(n, Op.CREATE_AND_WRITE_PEER, oid, epoch=epoch, offset=offset,
                                 data=data, flags=flags, cow_oid=cow_oid, copies=copies)),
            write=True)

    def _cow_here(self, nodes: Sequence[SdNode], cow_oid: int, copies: int) -> bool:
        """Copy-on-write can run inside our store only when we are the new
        object's one owner and also own the source: with copies=1 the two
        oids hash to different nodes as often as not."""
        return (len(nodes) == 1 and self._is_me(nodes[0])
                and any(self._is_me(n) for n in self.owners(cow_oid, copies)))

    async def remove(self, oid: int, *, copies: int = 0) -> None:
        async def local(epoch: int) -> None:
            await self.ready(oid)
            self._same_epoch(epoch)
            await self.peer.remove(oid)

        await self._retry(oid, copies, lambda epoch: self._all(
            self.owners(oid, copies), lambda: local(epoch),
            lambda n: self._send(n, Op.REMOVE_PEER, oid, epoch=epoch)))

    async def flush(self, nodes: Sequence[SdNode]) -> None:
        """Flush every node's cached writes. Only a node that has left the
        membership is passed over (its copies no longer count; recovery
        rebuilds them from these). A member that fails its flush fails
        ours; one that cannot answer now (a new epoch, a dropped link) is
        asked again while it is a member, up to RETRY_TIMEOUT."""

        async def remote(n: SdNode) -> None:
            deadline = trio.current_time() + RETRY_TIMEOUT
            while True:
                epoch = self.epoch()
                try:
                    await self._remote(n, Op.FLUSH_PEER, 0, epoch=epoch)
                    return
                except (GatewayError, PeerError) as e:
                    if not self.member(n):
                        return
                    if (isinstance(e, GatewayError) and e.result not in RETRYABLE) \
                            or trio.current_time() > deadline:
                        raise
                    log.debug("flush of %s again at epoch %d: %s", n.nid, epoch, e)
                await self.wait_epoch(epoch, RETRY_PAUSE)

        # Each flush retries on its own: they run side by side, and the
        # first failure (by node order) wins once all have ended.
        errors: list[BaseException | None] = [None] * len(nodes)

        async def one(i: int, node: SdNode) -> None:
            try:
                await (self.peer.flush() if self._is_me(node) else remote(node))
            except Exception as e:  # noqa: BLE001 - collected, re-raised below
                errors[i] = e

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(one, i, node)
        _raise_first(errors)


def _raise_first(errors: Sequence[BaseException | None]) -> None:
    """Raise the first error of the owners' (none: return); with one
    owner its own error, as it came."""
    for err in errors:
        if err is not None:
            if len(errors) == 1:
                raise err
            raise GatewayError(result_of(err), str(err)) from err
