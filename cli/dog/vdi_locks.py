"""VDI lock states (SD_OP_GET_VDI_COPIES) as `vdi lock list` shows them."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sheepblk.client import ClientError, SheepClient
from sheepblk.proto import NodeId, Op, Res, VdiState
from sheepblk.proto.constants import SD_MAX_COPIES
from sheepblk.proto.node import NODE_ID_SIZE
from sheepblk.proto.records import VDI_STATE_SIZE

# struct vdi_state up to lock_owner, then nr_participants and the arrays.
_HEAD_SIZE = 20
_PARTICIPANTS_OFF = _HEAD_SIZE + NODE_ID_SIZE
# dog starts with room for 512 states and doubles on BUFFER_SMALL.
_FIRST_COUNT = 512
_MAX_COUNT = 1 << 20

LOCK_UNLOCKED, LOCK_LOCKED, LOCK_SHARED = 1, 2, 3
SHARED_STATE_NAMES = {1: "modified", 2: "shared", 3: "invalidated"}


@dataclass
class LockInfo:
    state: VdiState
    participants: list[tuple[NodeId, int]]

    @property
    def lock_state(self) -> int:
        return self.state.lock_state


def parse_states(data: bytes | memoryview) -> dict[int, LockInfo]:
    out: dict[int, LockInfo] = {}
    for off in range(0, len(data) - VDI_STATE_SIZE + 1, VDI_STATE_SIZE):
        st = VdiState.unpack(data, off)
        (nr,) = struct.unpack_from("<I", data, off + _PARTICIPANTS_OFF)
        nr = min(nr, SD_MAX_COPIES)
        states_off = off + _PARTICIPANTS_OFF + 4
        ids_off = states_off + 4 * SD_MAX_COPIES
        parts = [(NodeId.unpack(data, ids_off + NODE_ID_SIZE * i),
                  struct.unpack_from("<I", data, states_off + 4 * i)[0]) for i in range(nr)]
        out[st.vid] = LockInfo(st, parts)
    return out


def vdi_states(c: SheepClient) -> dict[int, LockInfo] | None:
    """vid -> lock information, or None when the daemon cannot tell."""
    count = _FIRST_COUNT
    while count <= _MAX_COUNT:
        try:
            rsp, out = c.request(Op.GET_VDI_COPIES, data_length=count * VDI_STATE_SIZE,
                                 check=False)
        except ClientError:
            return None
        if rsp.result == Res.BUFFER_SMALL:
            count *= 2
            continue
        if rsp.result != Res.SUCCESS:
            return None
        return parse_states(out)
    return None


def node_id_str(nid: NodeId) -> str:
    """Sheepdog's node_id_to_str(): 'IPv4 ip:127.0.0.1 port:7000'."""
    family = "IPv6" if ":" in nid.addr else "IPv4"
    return f"{family} ip:{nid.addr} port:{nid.port}"
