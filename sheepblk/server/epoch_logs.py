"""Epoch logs this node missed, fetched from the other members on demand.

Why: a node that was down while the cluster moved through some epochs
(or restarted into a cluster that resumed without it) has no log of
those epochs, yet `dog cluster info` asks every node for the whole
history, and Sheepdog's answer is the same on every node. As Sheepdog's
epoch_log_read_remote does, a log missing here is asked of each other
member in turn (SD_OP_GET_EPOCH, which a node answers from its own logs
only) and the first answer is kept as our own log of that epoch, so the
next question is answered locally. When nobody has it, the epoch stays
empty (as in Sheepdog).
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from ..proto import (
    SD_NODE_SIZE,
    SD_SHEEP_PROTO_VER,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
    unpack_nodes,
)
from .peer_client import PeerError
from .wire_checks import SD_MAX_NODES

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep")

_TIME = struct.Struct("<q")
_FIRST_SLOTS = 256  # node slots in the first answer buffer (grows on BUFFER_SMALL)


async def read_epoch(node: NodeContext, epoch: int) -> tuple[list[SdNode], int] | None:
    """The members and start time of `epoch`: from our log, else from the
    first other member that has one (saved here). None when nobody has."""
    got = node.epochs.read(epoch)
    if got is not None:
        return got
    for peer in list(node.members):
        if peer.nid == node.me.nid:
            continue
        fetched = await _ask(node, peer, epoch)
        if fetched is None:
            continue
        nodes, stamp = fetched
        node.epochs.write(epoch, nodes, stamp)
        node.view.forget_ring(epoch)
        log.info("epoch %d: log fetched from %s", epoch, peer.nid)
        return fetched
    return None


async def _ask(node: NodeContext, peer: SdNode, epoch: int) -> tuple[list[SdNode], int] | None:
    slots = _FIRST_SLOTS
    while True:
        buf = bytearray(slots * SD_NODE_SIZE + _TIME.size)
        req = Request(Op.GET_EPOCH, epoch=node.epoch, data_length=len(buf),
                      args=ObjArgs(tgt_epoch=epoch).pack(), proto_ver=SD_SHEEP_PROTO_VER)
        try:
            rsp, n = await node.peers.request(peer.nid, req, None, memoryview(buf))
        except PeerError as e:
            log.warning("epoch %d: no log from %s: %s", epoch, peer.nid, e)
            return None
        if rsp.result == Res.BUFFER_SMALL and slots < SD_MAX_NODES:
            slots = min(slots * 4, SD_MAX_NODES)
            continue
        break
    if rsp.result != Res.SUCCESS or n < _TIME.size:
        return None  # NO_TAG: it missed that epoch too
    count = (n - _TIME.size) // SD_NODE_SIZE
    (stamp,) = _TIME.unpack_from(buf, count * SD_NODE_SIZE)
    return unpack_nodes(buf, count), stamp
