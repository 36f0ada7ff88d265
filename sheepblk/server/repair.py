"""Replica checks for `dog vdi check`: SD_OP_GET_HASH and SD_OP_REPAIR_REPLICA.

As Sheepdog 1.0's local_get_hash / local_repair_replica (sheep/ops.c) do
it: GET_HASH answers the SHA-1 of this node's whole copy of an object (the
object's full size, unwritten bytes as zeros, so two copies with the same
bytes hash the same however they were written); REPAIR_REPLICA reads the
whole object from the node named in the request (`sd_req.forw`) and stores
it here with create-and-write, replacing a missing or differing copy.
dog compares the digests and picks the good copy; the daemons only copy.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import trio

from ..proto import (
    SD_SHEEP_PROTO_VER,
    ForwArgs,
    HashResult,
    ObjArgs,
    Op,
    Request,
    Res,
)
from ..store import ObjectStore, StoreError
from .reply import Caller, Reply

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep.repair")

# Objects are hashed in slices this large, so an inode (12 MiB) does not
# need one buffer of its whole size per request.
HASH_CHUNK = 1 << 22


def sha1_of(store: ObjectStore, oid: int, size: int) -> bytes:
    """Runs in a worker thread: read the local copy slice by slice."""
    h = hashlib.sha1(usedforsecurity=False)
    buf = memoryview(bytearray(min(size, HASH_CHUNK)))
    pos = 0
    while pos < size:
        n = min(len(buf), size - pos)
        store.read_into(oid, pos, buf[:n])
        h.update(buf[:n])
        pos += n
    return h.digest()


async def get_hash(node: NodeContext, req: Request, data: memoryview | None,
                   caller: Caller) -> Reply:
    """SHA-1 of this node's copy; NO_OBJ when it holds none (dog then
    counts the copy as missing and asks for a repair)."""
    oid = ObjArgs.unpack(req.args).oid
    if not await node.peer.exists(oid):
        return Reply(Res.NO_OBJ)
    size = node.view.stored_size(oid)
    try:
        digest = await trio.to_thread.run_sync(sha1_of, node.store, oid, size,
                                               limiter=node.peer.limiter)
    except StoreError as e:
        return Reply(getattr(e, "result", Res.EIO))
    return Reply(args=HashResult(digest).pack())


async def repair_replica(node: NodeContext, req: Request, data: memoryview | None,
                         caller: Caller) -> Reply:
    """Copy the whole object from the node in `forw` over the local copy.

    Error handling: the source's result code (or NETWORK_ERROR) is
    answered as is; nothing is written here unless the whole object was
    read."""
    oid, src = ForwArgs.unpack(req.args)
    if node.view.ec_of(oid) is not None:
        # Each node holds another strip: a copy of the source's would
        # replace ours with the wrong one. `dog vdi check` rebuilds strips.
        log.warning("refused to repair %016x from %s: an erasure-coded object has strips, "
                    "not replicas", oid, src)
        return Reply(Res.NO_SUPPORT)
    size = node.view.stored_size(oid)
    buf = memoryview(bytearray(size))
    if src == node.me.nid:
        await node.peer.read(oid, 0, buf, size)
    else:
        peer_req = Request(Op.READ_PEER, 0, node.epoch, 0, size,
                           ObjArgs(oid=oid).pack(), SD_SHEEP_PROTO_VER)
        rsp, _ = await node.peers.request(src, peer_req, None, buf)
        if rsp.result != Res.SUCCESS:
            return Reply(rsp.result)
    await node.peer.create_and_write(oid, 0, buf, size, sync=True)
    return Reply()
