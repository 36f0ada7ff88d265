"""What a joining node learns from the cluster, carried in the ordered stream.

Why through the stream and not over a side connection: the stream is the
only place where "the state as of event N" exists on every node. When a
node joins, the first member already in sync (in membership order, so every
node agrees who) snapshots its state *while applying the Joined event* and
broadcasts it as a `sync` message. The joiner parks every event it receives
after its own Joined until that message arrives, adopts the snapshot, then
applies the parked events: it ends up exactly where the others are, with no
event applied twice or missed (cluster ops' main halves are idempotent, which
covers a blocked op whose block the joiner never saw).

A `claim` message is what a formatted node broadcasts when it joins a
cluster that waits for its last epoch's nodes (a restart): its latest epoch
and the VDIs whose inodes it stores, so every node folds the same claims
and agrees on the epoch to resume from and on the full VDI table.

A `vdis` message is what a formatted node broadcasts once it has rejoined
a running cluster: the VDIs whose inodes it stores. The sync gave it the
cluster's table, but the cluster may never have seen some of its VDIs (the
node was the last holder of their inodes when everyone stopped, and the
others restarted without it); every node folds them in, as Sheepdog's nodes
fetch a joiner's VDI states.

A `force` message (`dog cluster recover force`) makes a waiting cluster
run with the nodes it has. A `recovered` message says a node finished recovery for an epoch; once
every member said so, objects a node no longer owns go to obj/.stale/. A
`failed` message is the last word of a node that fails stop: why it
leaves, which every node keeps for `dog node info`. An `update` message
is a member announcing itself anew (new vnodes or space): every node
replaces what the driver said of it, and a running cluster takes a new
epoch.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..cluster.stream import node_from_json, node_to_json
from ..proto import SdNode
from ..store import NodeConfig
from .vdi_table import VdiEntry, VdiTable

SYNC, CLAIM, VDIS, RECOVERED, FORCE, FAILED, UPDATE = (
    "sync", "claim", "vdis", "recovered", "force", "failed", "update")
KINDS = (SYNC, CLAIM, VDIS, RECOVERED, FORCE, FAILED, UPDATE)

# Epochs a joiner receives in its sync message (for `dog cluster info` and
# for recovery's older rings). The zookeeper driver splits a message past
# 384 KiB into parts, so the sync may grow with the VDIs; this keeps it lean.
SYNC_EPOCHS = 64


_NAMES = 12  # a row's fields before the lock fields


def entries_to_json(table: VdiTable, *, locks: bool) -> list[list[Any]]:
    """Rows: vid, copies, policy, shift, snapshot, deleted, parent, named,
    name (hex), tag (hex), snap_id, create_time [, lock state, owner,
    participants]."""
    out = []
    for e in table.entries.values():
        row: list[Any] = [e.vid, e.copies, e.copy_policy, e.block_size_shift,
                          int(e.snapshot), int(e.deleted), e.parent, int(e.named),
                          e.name.hex(), e.tag.hex(), e.snap_id, e.create_time]
        if locks:
            row += [e.lock_state, e.owner, sorted(e.participants)]
        out.append(row)
    return out


def entries_from_json(rows: list[list[Any]]) -> list[VdiEntry]:
    out = []
    for row in rows:
        e = VdiEntry(int(row[0]), int(row[1]), int(row[2]), int(row[3]), bool(row[4]),
                     bool(row[5]), int(row[6]), named=bool(row[7]),
                     name=bytes.fromhex(row[8]), tag=bytes.fromhex(row[9]),
                     snap_id=int(row[10]), create_time=int(row[11]))
        if len(row) > _NAMES:
            e.lock_state, e.owner, e.participants = \
                int(row[_NAMES]), str(row[_NAMES + 1]), set(row[_NAMES + 2])
        out.append(e)
    return out


def merge_entries(table: VdiTable, entries: list[VdiEntry]) -> None:
    """Union another node's view into `table` (restart: each node stores the
    inodes of only some VDIs, some copies older than others). Snapshot and
    deleted flags only ever get set; naming facts come from the most
    advanced copy (a snapshot's over a working VDI's: its tag is final)."""
    for e in entries:
        old = table.get(e.vid)
        if old is None:
            table.add(e)
            continue
        if e.named and (not old.named or (e.snapshot and not old.snapshot)):
            table.set_names(e.vid, e.name, e.tag, e.snap_id, e.create_time)
        if e.snapshot:
            table.mark_snapshot(e.vid)
        if e.deleted:
            table.mark_deleted(e.vid)


def replace_entries(table: VdiTable, entries: list[VdiEntry]) -> None:
    table.reset()
    for e in entries:
        lock = (e.lock_state, e.owner, e.participants)
        table.add(e)
        e.lock_state, e.owner, e.participants = lock


def epochs_to_json(history: list[tuple[int, list[SdNode], int]]) -> list[list[Any]]:
    return [[ep, [node_to_json(n) for n in nodes], stamp] for ep, nodes, stamp in history]


def epochs_from_json(raw: list[list[Any]]) -> list[tuple[int, list[SdNode], int]]:
    return [(int(ep), [node_from_json(n) for n in nodes], int(stamp))
            for ep, nodes, stamp in raw]


def config_to_json(config: NodeConfig) -> dict[str, Any]:
    return asdict(config)


def config_from_json(raw: dict[str, Any]) -> NodeConfig:
    known = {k: v for k, v in raw.items() if k in NodeConfig.__dataclass_fields__}
    return NodeConfig(**known)
