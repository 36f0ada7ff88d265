"""Peer ops: another sheep's request on this node's own copy of an
object (sheep/ops.c's peer_read_obj and friends).

Every handler first holds the request to our epoch (Sheepdog's
check_request_epoch, `NodeContext.check_request_epoch`), then, unless it is
recovery's own read or a flush, waits until recovery has this object.
The op table (optable.py) names the handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ..proto import ClusterStatus, Flag, ObjArgs, Op, Request, Res, ec
from ..store import NoObject, StoreError
from . import ec_recovery, stale, wire_checks
from .peer import result_of
from .reply import Caller, Reply
from .strips import STRIP, check_strip

if TYPE_CHECKING:
    from .context import NodeContext

Body = Callable[["NodeContext", Request, ObjArgs, memoryview], Awaitable[Reply]]


# A peer request from a node already at a newer epoch waits this long for
# ours to catch up before it is answered NEW_NODE_VER (and retried).
NEW_EPOCH_WAIT = 5.0


async def check_request_epoch(node: NodeContext, req: Request) -> int:
    """Sheepdog's check_request_epoch: a peer request must come from a
    node at our epoch. An older sender retries; for a newer one we wait a
    little for our own epoch to catch up."""
    if not req.epoch or req.epoch == node.epoch:
        return Res.SUCCESS
    if req.epoch < node.epoch:
        return Res.OLD_NODE_VER
    with trio.move_on_after(NEW_EPOCH_WAIT):
        while node.epoch < req.epoch:
            await node.wait_epoch(node.epoch, NEW_EPOCH_WAIT)
    if req.epoch == node.epoch:
        return Res.SUCCESS
    return Res.OLD_NODE_VER if req.epoch < node.epoch else Res.NEW_NODE_VER


async def _admitted(node: NodeContext, req: Request, a: ObjArgs) -> int:
    """SUCCESS once the request may touch our copy, else the code to answer."""
    res = await check_request_epoch(node, req)
    if res != Res.SUCCESS:
        return res
    if req.opcode == Op.READ_PEER and a.tgt_epoch:
        # Recovery's own reads are not held for our recovery (two
        # recovering nodes could wait on each other), only for writes
        # let in before the reader's epoch (see InFlightWrites).
        await node.peer.in_flight.settled(a.oid, req.epoch)
    elif req.opcode != Op.FLUSH_PEER:
        await node.recovery.ready(a.oid)
        if req.epoch and req.epoch != node.epoch:
            return Res.OLD_NODE_VER  # moved on while we waited
    return Res.SUCCESS


def _served(body: Body) -> Callable[[NodeContext, Request, memoryview | None, Caller],
                                    Awaitable[Reply]]:
    """A peer op's handler: admission first, then `body`."""

    async def handler(node: NodeContext, req: Request, data: memoryview | None,
                      caller: Caller) -> Reply:
        a = ObjArgs.unpack(req.args)
        res = await _admitted(node, req, a)
        if res != Res.SUCCESS:
            return Reply(res)
        return await body(node, req, a, data if data is not None else memoryview(b""))

    handler.__name__ = handler.__qualname__ = body.__name__
    handler.__doc__ = body.__doc__
    return handler


async def _read_stale(node: NodeContext, oid: int, offset: int, buf: memoryview, since: int) -> None:
    """Recovery asks for the object as of epoch `since` and our obj/ has
    none: answer from a stale copy at least that new (NoObject if there
    is none)."""
    size = node.view.stored_size(oid)

    def read() -> None:
        ep = stale.newest_copy(node.store, oid, since)
        if ep is None:
            raise NoObject(f"{oid:016x}: no copy as of epoch {since}")
        if offset == 0 and len(buf) >= size:
            node.store.read_stale(oid, ep, buf)
            return
        whole = memoryview(bytearray(size))
        node.store.read_stale(oid, ep, whole)
        n = max(0, min(len(buf), size - offset))
        buf[:n] = whole[offset:offset + n]
        buf[n:] = bytes(len(buf) - n)

    await trio.to_thread.run_sync(read)


async def _read(node: NodeContext, req: Request, a: ObjArgs, payload: memoryview) -> Reply:
    node.peer.check_range(a.oid, a.offset, req.data_length, node.view.stored_size(a.oid))
    code = node.view.ec_of(a.oid)
    size = node.view.stored_size(a.oid)
    want = a.reserved == ec_recovery.WANT_STRIP and code is not None
    if want and (a.offset or req.data_length != size):
        return Reply(Res.INVALID_PARMS)
    buf = node.buffers.get(req.data_length)
    try:
        if want and code is not None:
            # Recovery wants a given strip: ours, or one we kept aside.
            await trio.to_thread.run_sync(ec_recovery.find_strip, node.store, a.oid, a.ec_index,
                                          memoryview(buf)[:size], *code,
                                          limiter=node.peer.limiter)
            return Reply(data=buf, pooled=buf)
        try:
            _strip(node, req, a)
            await node.peer.read(a.oid, a.offset, memoryview(buf), node.view.stored_size(a.oid))
        except NoObject:
            if not a.tgt_epoch:
                raise
            await _read_stale(node, a.oid, a.offset, memoryview(buf), a.tgt_epoch)
    except BaseException:
        node.buffers.put(buf)
        raise
    return Reply(data=buf, pooled=buf)


def _strip(node: NodeContext, req: Request, a: ObjArgs) -> memoryview | None:
    """For a request of one strip (strips.STRIP): check that our copy is
    that strip (NoObject if not), and return the trailer a write of it
    leaves (None when the strip's stamp is already this epoch, or for
    any other request)."""
    code = node.view.ec_of(a.oid)
    if a.reserved != STRIP or code is None:
        return None
    stamp = check_strip(node.store, a.oid, node.view.stored_size(a.oid), a.ec_index, *code)
    if stamp == req.epoch:
        return None
    return memoryview(ec.trailer(a.ec_index, *code, req.epoch))


async def _write(node: NodeContext, req: Request, a: ObjArgs, payload: memoryview) -> Reply:
    size = node.view.stored_size(a.oid)
    sync = not (req.flags & Flag.CMD_CACHE)
    stamp = None
    try:
        stamp = _strip(node, req, a)
        await node.peer.write(a.oid, a.offset, payload, size, sync=sync)
    except NoObject:
        # We own it but our recovery never saw it: pull, then write.
        if not await node.recovery.fetch_missing(a.oid):
            raise
        if req.epoch and req.epoch != node.epoch:
            return Reply(Res.OLD_NODE_VER)
        stamp = _strip(node, req, a)
        await node.peer.write(a.oid, a.offset, payload, size, sync=sync)
    if stamp is not None:
        await node.peer.write(a.oid, size - len(stamp), stamp, size, sync=sync)
    return Reply()


async def _create_and_write(node: NodeContext, req: Request, a: ObjArgs,
                            payload: memoryview) -> Reply:
    cow = a.cow_oid if req.flags & Flag.CMD_COW else 0
    size = node.view.stored_size(a.oid, a.copy_policy)
    sync = not (req.flags & Flag.CMD_CACHE)
    await node.peer.create_and_write(a.oid, a.offset, payload, size, cow_oid=cow, sync=sync)
    code = node.view.ec_of(a.oid, a.copy_policy)
    if a.reserved == STRIP and code is not None and a.offset + len(payload) < size:
        # A new strip of which the gateway sent a part: we name it.
        trailer = memoryview(ec.trailer(a.ec_index, *code, req.epoch))
        await node.peer.write(a.oid, size - len(trailer), trailer, size, sync=sync)
    return Reply()


async def _remove(node: NodeContext, req: Request, a: ObjArgs, payload: memoryview) -> Reply:
    await node.peer.remove(a.oid)
    return Reply()


async def _flush(node: NodeContext, req: Request, a: ObjArgs, payload: memoryview) -> Reply:
    await node.peer.flush()
    return Reply()


read_peer = _served(_read)
write_peer = _served(_write)
create_and_write_peer = _served(_create_and_write)
remove_peer = _served(_remove)
flush_peer = _served(_flush)


# The peer ops serve_now may answer inline.
SERVED_NOW = frozenset({Op.READ_PEER, Op.WRITE_PEER})


def serve_now(node: NodeContext, req: Request, data: memoryview | None,
              caller: Caller) -> Reply | None:
    """Serve a small READ_PEER, or a small cached WRITE_PEER, at once
    when every step the handler would take is immediate: the cluster is
    up, the request is of our epoch, recovery is not running (so it has
    every object) and it is not recovery's own read. Otherwise None, with
    nothing changed, and the handler serves it. Why: a replicated write
    reaches every copy as a WRITE_PEER; answered inline, it costs its
    node no task, and the answers of a batch of them leave in one sendmsg
    on the gateway's pipelined connection."""
    op = req.opcode
    if op == Op.READ_PEER:
        n = req.data_length
    elif op == Op.WRITE_PEER and req.flags & Flag.CMD_CACHE and data is not None:
        n = len(data)
    else:
        return None
    if (node.status != ClusterStatus.OK or req.epoch != node.epoch
            or not node.peer.inline_ok(n) or node.recovery.active):
        return None
    if wire_checks.refused(req, data, node.view) is not None:
        return None  # the handler answers it (and says why)
    a = ObjArgs.unpack(req.args)
    if a.tgt_epoch:
        return None
    if not node.leases.active:
        node.leases.used(caller.key)
    size = node.view.stored_size(a.oid)
    if op == Op.WRITE_PEER:
        assert data is not None
        try:
            stamp = _strip(node, req, a)
            node.peer.write_now(a.oid, a.offset, data, size)
            if stamp is not None:
                node.peer.write_now(a.oid, size - len(stamp), stamp, size)
        except NoObject:
            return None  # the handler pulls it first (recovery never saw it)
        except StoreError as e:
            return Reply(result_of(e))
        return Reply()
    buf = node.buffers.get(n)
    try:
        _strip(node, req, a)
        node.peer.read_now(a.oid, a.offset, memoryview(buf), size)
    except StoreError as e:
        node.buffers.put(buf)
        return Reply(result_of(e))
    return Reply(data=buf, pooled=buf)
