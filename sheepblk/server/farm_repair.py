"""Rewrite a corrupted local copy from a good replica.

The farm backend refuses to serve bytes that fail their checksum
(CorruptObject, answered as EIO, so the gateway reads another copy). The
store tells us through MdStore.on_corrupt; this module then reads the whole
object from another owner (READ_PEER) and writes it back here with
create-and-write, which replaces the file atomically. With no other copy
(a single node, copies=1) the object stays refused and the log says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..proto import SD_SHEEP_PROTO_VER, ObjArgs, Op, Request, Res
from .peer_client import PeerError

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep.repair")


class Repairer:
    """Resource handling: runs one task per object in the node's nursery;
    an object already being repaired is not queued twice. Error handling:
    failures are logged; the object then stays refused until the next
    detection tries again."""

    def __init__(self, node: NodeContext, nursery: trio.Nursery) -> None:
        self.node = node
        self.nursery = nursery
        self.token = trio.lowlevel.current_trio_token()
        self.pending: set[int] = set()
        self.repaired = 0

    def __call__(self, oid: int) -> None:
        """Called by the store from an I/O thread."""
        try:
            trio.from_thread.run_sync(self._kick, oid, trio_token=self.token)
        except RuntimeError:  # already in the trio thread
            self._kick(oid)

    def _kick(self, oid: int) -> None:
        if oid in self.pending:
            return
        self.pending.add(oid)
        self.nursery.start_soon(self.repair, oid)

    async def repair(self, oid: int) -> bool:
        node = self.node
        if node.view.ec_of(oid) is not None:
            log.error("strip of %016x is corrupt: `dog vdi check` rebuilds it", oid)
            return False
        try:
            size = node.view.object_size(oid)
            others = [n for n in node.view.placement(oid, 0) if n.nid != node.me.nid]
            if not others:
                log.error("object %016x is corrupt and has no other copy here", oid)
                return False
            for peer in others:
                buf = memoryview(bytearray(size))
                req = Request(Op.READ_PEER, 0, node.epoch, 0, size,
                              ObjArgs(oid=oid).pack(), SD_SHEEP_PROTO_VER)
                try:
                    rsp, n = await node.peers.request(peer.nid, req, None, buf)
                except PeerError as e:
                    log.warning("repair of %016x: %s", oid, e)
                    continue
                if rsp.result != Res.SUCCESS or n != size:
                    continue
                await node.peer.create_and_write(oid, 0, buf, size, sync=True)
                self.repaired += 1
                log.warning("object %016x was corrupt here: rewritten from %s", oid, peer.nid)
                return True
            log.error("object %016x is corrupt and no other copy answered", oid)
            return False
        except Exception:
            log.exception("repair of %016x failed", oid)
            return False
        finally:
            self.pending.discard(oid)
