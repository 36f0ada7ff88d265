"""Gateway ops: a client's object I/O, served by finding the object's
owners (sheep/gateway.c's gateway_read_obj and friends).

Each handler takes the node, the request and its payload; the op table
(optable.py) names them. The inline fast path (`serve_now`)
shares `lease_io` and `readonly` with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..proto import (
    ClusterStatus,
    Flag,
    ObjArgs,
    Op,
    Request,
    Res,
    data_vid_offset,
    is_data_obj,
    is_vdi_obj,
    oid_to_vid,
)
from ..store import NoObject, StoreError
from . import wire_checks
from .peer import result_of
from .reply import Caller, FileSpan, Reply

if TYPE_CHECKING:
    from .context import NodeContext


def lease_io(node: NodeContext, key: str, oid: int) -> None:
    """handle_nowait's share of `handle`'s lease bookkeeping (a key that
    is not fresh releases nothing)."""
    if not node.leases.active:
        node.leases.used(key)
    else:
        node.leases.touch(key, oid_to_vid(oid))


def readonly(node: NodeContext, oid: int, offset: int, data: memoryview | None) -> bool:
    """Writes to a snapshot's objects are refused, except zeroing its
    index entries, which Sheepdog's dog does before deleting it."""
    vid = oid_to_vid(oid)
    if not node.table.is_snapshot(vid):
        return False
    if is_data_obj(oid):
        return True
    if is_vdi_obj(oid):
        return not (offset >= data_vid_offset(0) and data is not None and not any(data))
    return False


async def _read_span(node: NodeContext, a: ObjArgs, n: int) -> FileSpan | None:
    """A large read of this node's own copy as a span of its file, sent
    with sendfile (no worker thread, no copy through our memory), when
    that copy is in the page cache; otherwise None and the gateway reads
    it (failing over to other copies as it does)."""
    if (node.peer.inline_ok(n) or node.view.halted(a.oid, a.copies)
            or node.view.ec_of(a.oid) is not None):
        return None
    owners = node.gateway.owners(a.oid, a.copies)
    if not any(o.nid == node.me.nid for o in owners):
        return None
    await node.gateway.ready(a.oid)
    try:
        got = node.peer.open_span(a.oid, a.offset, n, node.view.object_size(a.oid))
    except StoreError:
        if len(owners) > 1:
            return None
        raise
    if got is None:
        return None
    return FileSpan(got[0], a.offset, got[1], n)


async def read_obj(node: NodeContext, req: Request, data: memoryview | None, caller: Caller) -> Reply:
    a = ObjArgs.unpack(req.args)
    node.peer.check_range(a.oid, a.offset, req.data_length, node.view.object_size(a.oid))
    span = await _read_span(node, a, req.data_length)
    if span is not None:
        return Reply(file=span)
    buf = node.buffers.get(req.data_length)
    try:
        await node.gateway.read(a.oid, a.offset, memoryview(buf), copies=a.copies)
    except BaseException:
        node.buffers.put(buf)
        raise
    return Reply(data=buf, pooled=buf)


async def remove_obj(node: NodeContext, req: Request, data: memoryview | None,
                     caller: Caller) -> Reply:
    a = ObjArgs.unpack(req.args)
    await node.gateway.remove(a.oid, copies=a.copies)
    return Reply()


async def write_obj(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    a = ObjArgs.unpack(req.args)
    payload = data if data is not None else memoryview(b"")
    if readonly(node, a.oid, a.offset, payload):
        return Reply(Res.READONLY)
    sync = not (req.flags & Flag.CMD_CACHE)
    # An index write may leave objects nobody maps: free them after.
    old = await node.vdi.index_before(a.oid, a.offset, payload)
    await node.gateway.write(a.oid, a.offset, payload, sync=sync, copies=a.copies)
    if old is not None:
        await node.vdi.index_after(a.oid, a.offset, payload, old, durable=sync)
    return Reply()


async def create_and_write_obj(node: NodeContext, req: Request, data: memoryview | None,
                               caller: Caller) -> Reply:
    a = ObjArgs.unpack(req.args)
    payload = data if data is not None else memoryview(b"")
    if readonly(node, a.oid, a.offset, payload):
        return Reply(Res.READONLY)
    cow = a.cow_oid if req.flags & Flag.CMD_COW else 0
    await node.gateway.create_and_write(a.oid, a.offset, payload,
                                        sync=not (req.flags & Flag.CMD_CACHE),
                                        cow_oid=cow, copies=a.copies,
                                        copy_policy=a.copy_policy)
    return Reply()


def serve_now(node: NodeContext, req: Request, data: memoryview | None,
              caller: Caller) -> Reply | None:
    """Serve a small READ_OBJ, or a small cached WRITE_OBJ of a data
    object, at once when every step `handle` would take is immediate:
    the cluster is up and not recovering, the client is no fresh lock
    session, this node holds the copy read (or the only copy written)
    and its store's small I/O is cheap. Otherwise None, with nothing
    changed, and `handle` serves it. Why: no task, no thread hop, and the
    connection can send several such answers in one sendmsg."""
    op = req.opcode
    if op == Op.READ_OBJ:
        n = req.data_length
    elif op == Op.WRITE_OBJ and req.flags & Flag.CMD_CACHE and data is not None:
        n = len(data)
    else:
        return None
    if node.status != ClusterStatus.OK or not node.peer.inline_ok(n) or node.fenced():
        return None
    if node.recovery.active:
        return None
    key = caller.key
    if node.leases.active and node.leases.fresh(key):
        return None
    if wire_checks.refused(req, data, node.view) is not None:
        return None  # `handle` answers it (and says why)
    a = ObjArgs.unpack(req.args)
    oid = a.oid
    if node.view.halted(0, node.config.copies) or node.view.halted(oid, a.copies):
        return None
    if node.view.ec_of(oid) is not None:
        return None  # strips, not copies: the gateway decodes
    owners = node.gateway.owners(oid, a.copies)
    me = node.me.nid
    if op == Op.WRITE_OBJ:
        assert data is not None
        if not (len(owners) == 1 and owners[0].nid == me) or not is_data_obj(oid):
            return None
        lease_io(node, key, oid)
        if readonly(node, oid, a.offset, data):
            return Reply(Res.READONLY)
        try:
            node.peer.write_now(oid, a.offset, data, node.view.object_size(oid))
        except NoObject:
            return None  # `handle` may pull it first (recovery never saw it)
        except StoreError as e:
            return Reply(result_of(e))
        return Reply()
    if not any(o.nid == me for o in owners):
        return None
    buf = node.buffers.get(n)
    try:
        node.peer.read_now(oid, a.offset, memoryview(buf), node.view.object_size(oid))
    except StoreError as e:
        node.buffers.put(buf)
        if len(owners) > 1:
            return None  # `handle` fails over to another copy
        lease_io(node, key, oid)
        return Reply(result_of(e))
    lease_io(node, key, oid)
    return Reply(data=buf, pooled=buf)
