"""The gateway's erasure-coded object I/O (sheep/gateway.c's
prepare_erasure_requests / finish_requests, on proto/ec.py's code).

An object of a D:P VDI is D data strips and P parity strips; strip i lives
on the object's i-th owner (view.owners_in). A read asks the owners of the
data strips for its stripes' share of their strips, and the parity owners
only for what is missing, then decodes. A write rewrites whole 512-byte
stripes on every owner: a write that covers whole stripes needs nothing
read first; one that starts or ends inside a stripe reads that stripe
(from any D strips) and merges. Creating an object sends every owner its
whole strip, with the trailer naming its index.

Why a lock per object: two writes of the same stripe through this
gateway must not interleave their strips (owner 1 keeping A's strip and
owner 2 B's leaves a stripe no D strips decode right). Writes through
*different* gateways are not ordered against each other: as Sheepdog,
we count on one writer per VDI (the VDI lock, `dog vdi lock`, the NBD
export's exclusive lock); two writers of one stripe through two
gateways may leave it torn, as two writers of one sector through two
paths may leave either's bytes with replication.

A write that fails halfway (the epoch moved) is retried whole: it
rewrites every strip of its stripes, so a stripe it tore heals.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from .. import erasure_code
from ..proto import SD_SHEEP_PROTO_VER, Flag, ObjArgs, Op, Request, Res, SdNode, ec
from ..store import NoObject
from .peer import result_of
from .peer_client import PeerCall
from .strips import STRIP, check_strip, stamp

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("sheep.gateway")


class ObjectLocks:
    """One trio.Lock per object while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, oid: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(oid, (trio.Lock(), 0))
        self._locks[oid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[oid]
            if users == 1:
                del self._locks[oid]
            else:
                self._locks[oid] = (lock, users - 1)


class ErasureIO:
    """Error handling: raises GatewayError (through the gateway's _retry)
    with the protocol result to answer: the strips' first retryable
    error, else NO_OBJ when no owner has the object, else the first
    error an owner gave."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.locks = ObjectLocks()

    def _code(self, oid: int) -> tuple[int, int]:
        code = self.gw.ec_of(oid, 0)
        assert code is not None
        return code

    # ---- reading strips ----

    async def _gather(self, oid: int, first: int, n: int, d: int, p: int,
                      epoch: int) -> dict[int, bytearray]:
        """Any D strips' share of stripes [first, first+n): the data
        strips first, parity only for what is missing."""
        from .gateway import GatewayError

        gw = self.gw
        owners = gw.owners(oid, d + p)
        w = ec.width(d)
        off, length = first * w, n * w
        got: dict[int, bytearray] = {}
        errors: list[BaseException] = []
        todo = list(range(len(owners)))
        while len(got) < d and todo:
            batch, todo = todo[:d - len(got)], todo[d - len(got):]
            for i, res in await self._read_strips(oid, owners, batch, off, length, epoch):
                if isinstance(res, BaseException):
                    errors.append(res)
                else:
                    got[i] = res
        if len(got) >= d:
            return got
        if gw.fenced():
            raise GatewayError(Res.NETWORK_ERROR, "cut off from the cluster driver")
        from .gateway import RETRYABLE

        codes = [result_of(e) for e in errors]
        retry = [e for e, c in zip(errors, codes, strict=True) if c in RETRYABLE]
        if retry:
            raise GatewayError(result_of(retry[0]), str(retry[0]))
        if codes and all(c == Res.NO_OBJ for c in codes) and not got:
            raise GatewayError(Res.NO_OBJ, f"no strip of {oid:016x}")
        bad = next((e for e in errors if result_of(e) != Res.NO_OBJ), None)
        raise GatewayError(result_of(bad) if bad else Res.EIO,
                           f"{len(got)} strips of {oid:016x}, {d} needed: {bad}")

    async def _read_strips(self, oid: int, owners: Sequence[SdNode], which: Sequence[int],
                           off: int, length: int,
                           epoch: int) -> list[tuple[int, bytearray | BaseException]]:
        gw = self.gw
        size = gw.stored_size(oid, 0)
        calls: dict[int, tuple[PeerCall, bytearray]] = {}
        out: list[tuple[int, bytearray | BaseException]] = []
        for i in which:
            node = owners[i]
            if gw._is_me(node):
                continue
            buf = bytearray(length)
            req = Request(Op.READ_PEER, 0, epoch, 0, length,
                          ObjArgs(oid=oid, offset=off, ec_index=i, reserved=STRIP).pack(),
                          SD_SHEEP_PROTO_VER)
            try:
                calls[i] = (await gw.peers.send(node.nid, req, None, memoryview(buf)), buf)
            except Exception as e:  # noqa: BLE001 - a missing strip
                out.append((i, e))
        for i in which:
            if gw._is_me(owners[i]):
                buf = bytearray(length)
                try:
                    await gw.ready(oid)
                    gw._same_epoch(epoch)
                    check_strip(gw.peer.store, oid, size, i, *self._code(oid))
                    await gw.peer.read(oid, off, memoryview(buf), size)
                    out.append((i, buf))
                except Exception as e:  # noqa: BLE001 - a missing strip
                    out.append((i, e))
        for i, (call, buf) in calls.items():
            try:
                await gw._answered(call)
                out.append((i, buf))
            except Exception as e:  # noqa: BLE001 - a missing strip
                out.append((i, e))
        return out

    async def read(self, oid: int, offset: int, buf: memoryview, d: int, p: int) -> None:
        async def attempt(epoch: int) -> None:
            first, n = ec.stripes(offset, len(buf))
            data = erasure_code.decode(await self._gather(oid, first, n, d, p, epoch), d, p)
            skip = offset - first * ec.STRIPE
            buf[:] = memoryview(data)[skip:skip + len(buf)]

        await self.gw._retry(oid, d + p, attempt)

    # ---- writing strips ----

    async def _stripes_of(self, oid: int, offset: int, data: memoryview, d: int, p: int,
                          epoch: int) -> tuple[int, bytes]:
        """(first stripe, whole stripes holding `data` at `offset`): the
        stripes it only partly covers are read and merged."""
        first, n = ec.stripes(offset, len(data))
        lo, end = first * ec.STRIPE, offset + len(data)
        if offset == lo and end % ec.STRIPE == 0:
            return first, bytes(data)
        whole = bytearray(n * ec.STRIPE)
        edges = set()
        if offset != lo:
            edges.add(first)
        if end % ec.STRIPE:
            edges.add(first + n - 1)
        for s in sorted(edges):
            got = erasure_code.decode(await self._gather(oid, s, 1, d, p, epoch), d, p)
            whole[(s - first) * ec.STRIPE:(s - first + 1) * ec.STRIPE] = got
        whole[offset - lo:end - lo] = data
        return first, bytes(whole)

    async def _send_strips(self, oid: int, opcode: int, epoch: int, offset: int,
                           strips: Sequence[bytes], *, sync: bool, copies: int = 0,
                           policy: int = 0) -> None:
        """Strip i to owner i (owners the ring has no zone for get none);
        a write also stamps the strip's trailer with its epoch."""
        gw = self.gw
        owners = gw.owners(oid, len(strips))
        index = {n.nid: i for i, n in enumerate(owners)}
        size = gw.stored_size(oid, policy)
        flags = 0 if sync else Flag.CMD_CACHE
        code = gw.ec_of(oid, policy)
        assert code is not None
        d, p = code

        async def local() -> None:
            i = index[gw.me.nid]
            await gw.ready(oid)
            gw._same_epoch(epoch)
            data = memoryview(strips[i])
            if opcode == Op.CREATE_AND_WRITE_PEER:
                await gw.peer.create_and_write(oid, offset, data, size, sync=sync)
                if offset + len(data) < size:  # the trailer was not sent with it
                    await gw.peer.write(oid, size - ec.TRAILER_SIZE, stamp(i, d, p, epoch),
                                        size, sync=sync)
            else:
                try:
                    stamped = check_strip(gw.peer.store, oid, size, i, d, p)
                except NoObject:
                    # Not here, or another strip: rebuild ours, then write.
                    if not await gw.fetch_missing(oid):
                        raise
                    gw._same_epoch(epoch)
                    stamped = 0
                await gw.peer.write(oid, offset, data, size, sync=sync)
                if stamped != epoch:
                    await gw.peer.write(oid, size - ec.TRAILER_SIZE, stamp(i, d, p, epoch),
                                        size, sync=sync)

        async def send(n: SdNode) -> PeerCall:
            i = index[n.nid]
            data = memoryview(strips[i])
            req = Request(opcode, flags | Flag.CMD_WRITE, epoch, 0, len(data),
                          ObjArgs(oid=oid, copies=copies, copy_policy=policy, offset=offset,
                                  ec_index=i, reserved=STRIP).pack(), SD_SHEEP_PROTO_VER)
            return await gw.peers.send(n.nid, req, data, None)

        await gw._all(owners, local, send)

    async def write(self, oid: int, offset: int, data: memoryview, d: int, p: int, *,
                    sync: bool) -> None:
        async def attempt(epoch: int) -> None:
            first, whole = await self._stripes_of(oid, offset, data, d, p, epoch)
            strips = erasure_code.encode(whole, d, p)
            await self._send_strips(oid, Op.WRITE_PEER, epoch, first * ec.width(d), strips,
                                    sync=sync)

        async with self.locks.hold(oid):
            await self.gw._retry(oid, d + p, attempt, write=True)

    async def create_and_write(self, oid: int, offset: int, data: memoryview, d: int, p: int,
                               *, sync: bool, cow_oid: int = 0, policy: int = 0) -> None:
        """A new object: the stripes `data` touches (zeros around it), or
        with copy-on-write the whole object. Each owner creates its strip
        (zeros where nothing is sent) and stamps its trailer."""
        gw = self.gw
        size = gw.object_size(oid)
        part: bytes | bytearray | memoryview
        if cow_oid:
            whole = bytearray(size)
            await gw.read(cow_oid, 0, memoryview(whole))
            whole[offset:offset + len(data)] = data
            first, part = 0, whole
        else:
            first, n = ec.stripes(offset, len(data))
            lo = first * ec.STRIPE
            if offset == lo and len(data) == n * ec.STRIPE:
                part = data
            else:
                padded = bytearray(n * ec.STRIPE)
                padded[offset - lo:offset - lo + len(data)] = data
                part = padded
        strips = erasure_code.encode(part, d, p)

        start = first * ec.width(d)
        whole_strips = start + len(strips[0]) == ec.strip_size(size, d)

        async def attempt(epoch: int) -> None:
            # Strips that reach their end carry their trailer: one store
            # write (and one sync) per owner, as for a replicated create.
            sent = ([s + ec.trailer(i, d, p, epoch) for i, s in enumerate(strips)]
                    if whole_strips else strips)
            await self._send_strips(oid, Op.CREATE_AND_WRITE_PEER, epoch, start, sent,
                                    sync=sync, copies=d + p, policy=policy)

        async with self.locks.hold(oid):
            await gw._retry(oid, d + p, attempt, write=True)
